#!/usr/bin/env python3
"""PyTorch (CPU) reference of the ditkd DiT training step.

The model is the adaLN-Zero DiT of facebookresearch/DiT `models.py` (learn_sigma=False), written
out here without timm: patch-embed conv (stride p), fixed 2D sin-cos pos_embed (a buffer, not a
parameter), timestep embedder ([cos, sin] of 256 frequencies -> Linear -> SiLU -> Linear), label
table with num_classes + 1 rows, DiT blocks (LayerNorm without affine, eps 1e-6; adaLN SiLU ->
Linear(D, 6D); plain softmax(QK^T / sqrt(hd)) V attention with qkv bias; GELU(tanh) MLP), final
adaLN layer + Linear to p*p*C, unpatchify.

One step = forward + MSE(model(x, t, y), eps) + backward + global-norm clip (1.0, as the candle
AdamW does) + AdamW(lr 1e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0). Weights are drawn
N(0, 0.02) like the candle bench, so no adaLN-Zero path is trivially zero.

--kind sample instead times the study's learning-curve sampler under torch.inference_mode(): 500
images by 25-step DDIM (eta 0, x_0 clipped to [-1, 1]) with classifier-free guidance 2, in chunks of
250 images, each step one forward over the conditional and null-class halves (a batch of 500), as
`distill::eval::generate` does. --kind gemm times a 512^3 f32 matmul (the single-core peak at
--threads 1).

Usage: python dit_torch.py --config A --iters 10 --warmup 2 --threads 2
       python dit_torch.py --config d3w80 --kind sample --threads 1
       python dit_torch.py --kind gemm --threads 1
The last stdout line is one JSON object.
"""

import argparse
import json
import math
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "A": dict(input_size=28, patch_size=4, in_channels=1, hidden_size=128, depth=4, num_heads=4,
              mlp_ratio=4.0, num_classes=10, batch=128),
    "B": dict(input_size=32, patch_size=2, in_channels=3, hidden_size=256, depth=8, num_heads=4,
              mlp_ratio=4.0, num_classes=10, batch=64),
}
# The study's students (sweeps/fashion-mnist.yaml): Fashion-MNIST 28x28, patch 4, 2 heads, batch 64.
for _name, _depth, _width in [("d1w60", 1, 60), ("d3w80", 3, 80), ("d8w24", 8, 24), ("d4w100", 4, 100)]:
    CONFIGS[_name] = dict(input_size=28, patch_size=4, in_channels=1, hidden_size=_width, depth=_depth,
                          num_heads=2, mlp_ratio=4.0, num_classes=10, batch=64)

FREQ_DIM = 256


# ---------------------------------------------------------------- fixed sin-cos position embedding
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # w goes first, as in the reference
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---------------------------------------------------------------- modules
class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=FREQ_DIM):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """num_classes + 1 rows (the last is the CFG null class). Labels are used as given: the
    candle bench applies no label dropout either."""

    def __init__(self, num_classes, hidden_size):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels):
        return self.embedding_table(labels)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # plain attention, no SDPA
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, input_size, patch_size, in_channels, hidden_size, depth, num_heads, mlp_ratio,
                 num_classes):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = in_channels  # learn_sigma=False
        self.patch_size = patch_size
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        grid = input_size // patch_size
        pos = torch.from_numpy(get_2d_sincos_pos_embed(hidden_size, grid)).float().unsqueeze(0)
        self.register_buffer("pos_embed", pos)  # fixed, not trainable
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)

    def unpatchify(self, x):
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y):
        x = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)


def analytic_params(cfg):
    d, c, p2 = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"] ** 2
    h = int(d * cfg["mlp_ratio"])
    x_embed = d * c * p2 + d
    t_embed = FREQ_DIM * d + d + d * d + d
    y_embed = (cfg["num_classes"] + 1) * d
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + (6 * d * d + 6 * d)
    final = (2 * d * d + 2 * d) + (d * p2 * c + p2 * c)
    return x_embed + t_embed + y_embed + cfg["depth"] * block + final


# ---------------------------------------------------------------- sampler (dit/src/sampler.rs)
def respaced_timesteps(total, steps):
    if steps == 1:
        return [total - 1]
    stride = (total - 1) / (steps - 1)
    out = []
    for i in range(steps):
        v = int(math.floor(i * stride + 0.5))  # Rust's f64::round (half away from zero; all >= 0)
        if not out or out[-1] != v:
            out.append(v)
    return out


def ddim_plan(steps, total=1000, beta_start=1e-4, beta_end=0.02):
    """(t, abar, abar_prev) per step, noisiest first, as dit::sampler::step_plan."""
    betas = [beta_start + (beta_end - beta_start) * i / (total - 1) for i in range(total)]
    abar, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        abar.append(acc)
    ts = respaced_timesteps(total, steps)
    plan = [(t, abar[t], 1.0 if i == 0 else abar[ts[i - 1]]) for i, t in enumerate(ts)]
    return plan[::-1]


def sample_ddim_cfg(model, noise, labels, num_classes, steps=25, cfg_scale=2.0, chunk=250):
    """Deterministic DDIM (eta 0) with classifier-free guidance and x_0 clipped to [-1, 1]."""
    plan = ddim_plan(steps)
    outs = []
    for start in range(0, noise.shape[0], chunk):
        x = noise[start:start + chunk]
        y = labels[start:start + chunk]
        n = x.shape[0]
        yy = torch.cat([y, torch.full_like(y, num_classes)])
        for t, ab, ab_prev in plan:
            tt = torch.full((2 * n,), float(t))
            eps = model(torch.cat([x, x]), tt, yy)
            cond, uncond = eps[:n], eps[n:]
            eps = uncond + cfg_scale * (cond - uncond)
            x0 = ((x - eps * math.sqrt(1.0 - ab)) * (1.0 / math.sqrt(ab))).clamp(-1.0, 1.0)
            eps = (x - x0 * math.sqrt(ab)) * (1.0 / math.sqrt(1.0 - ab))
            x = x0 * math.sqrt(ab_prev) + eps * math.sqrt(max(1.0 - ab_prev, 0.0))
        outs.append(x)
    return torch.cat(outs)


def time_sampling(args, model, cfg):
    images = args.images
    C, S = cfg["in_channels"], cfg["input_size"]
    noise = torch.randn(images, C, S, S)
    labels = torch.arange(images) % cfg["num_classes"]
    with torch.inference_mode():
        sample_ddim_cfg(model, noise, labels, cfg["num_classes"], steps=2)  # warm-up
        ms, cpu = [], []
        for _ in range(max(args.iters, 1)):
            c0, t0 = time.process_time(), time.perf_counter()
            out = sample_ddim_cfg(model, noise, labels, cfg["num_classes"], steps=25, cfg_scale=2.0)
            float(out.sum())
            ms.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
    med = statistics.median(ms)
    return med, images / (med / 1e3), statistics.median(cpu)


def time_gemm(n=512, reps=20):
    """Best of `reps` by wall time and by process CPU time (GFLOP/s each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2.0 * n ** 3 / best / 1e9, 2.0 * n ** 3 / max(best_cpu, 1e-9) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="A")
    ap.add_argument("--kind", choices=["step", "sample", "gemm"], default="step")
    ap.add_argument("--images", type=int, default=500, help="--kind sample: images per timed run")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="global-norm clip as in the candle AdamW (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.kind == "gemm":
        g, g_cpu = time_gemm()
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}: 512^3 f32 matmul {g:.1f} GFLOP/s "
              f"({g_cpu:.1f} GFLOP/s of CPU time)")
        print(json.dumps({"framework": "torch", "version": torch.__version__, "kind": "gemm", "n": 512,
                          "threads": args.threads, "gflops": round(g, 2), "gflops_cpu": round(g_cpu, 2)}),
              flush=True)
        return
    cfg = dict(CONFIGS[args.config])
    batch = cfg.pop("batch")
    model = DiT(**cfg)
    with torch.no_grad():
        for prm in model.parameters():
            prm.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = analytic_params(CONFIGS[args.config])
    assert n_params == expected, (n_params, expected)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, config {args.config}: "
          f"{n_params:,} trainable params (analytic {expected:,}), batch {batch}", flush=True)

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # after imports + init
    if args.kind == "sample":
        model.eval()
        med, ips, cpu_ms = time_sampling(args, model, cfg)
        print(f"config {args.config}: sampling {args.images} images (DDIM 25 steps, cfg 2) {med:.0f} ms, "
              f"{ips:.1f} images/s")
        print(json.dumps({"framework": "torch", "version": torch.__version__, "kind": "sample",
                          "config": args.config, "params": n_params, "images": args.images,
                          "threads": args.threads, "median_ms": round(med, 2), "cpu_ms": round(cpu_ms, 2),
                          "images_per_s": round(ips, 2)}),
              flush=True)
        return
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    C, S = cfg["in_channels"], cfg["input_size"]
    fwd, bwd, upd, step, cpu = [], [], [], [], []
    loss_v = float("nan")
    for i in range(args.warmup + args.iters):
        x = torch.randn(batch, C, S, S)
        eps = torch.randn_like(x)
        t = torch.randint(0, 1000, (batch,)).float()
        y = torch.randint(0, cfg["num_classes"], (batch,))
        c0, t0 = time.process_time(), time.perf_counter()
        loss = F.mse_loss(model(x, t, y), eps)
        loss_v = loss.item()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        t3 = time.perf_counter()
        c3 = time.process_time()
        if i >= args.warmup:
            cpu.append((c3 - c0) * 1e3)
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
            upd.append((t3 - t2) * 1e3)
            step.append((t3 - t0) * 1e3)
        print(f"  step {i}{' (warm-up)' if i < args.warmup else ''}: {(t3 - t0) * 1e3:.1f} ms, loss {loss_v:.4f}",
              flush=True)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    med = statistics.median(step)
    print(f"config {args.config}: step {med:.1f} ms (fwd {statistics.median(fwd):.1f}, "
          f"bwd {statistics.median(bwd):.1f}, clip+adamw {statistics.median(upd):.1f}), peak RSS {peak_mb:.0f} MB (after imports+init {base_mb:.0f} MB)")
    print(json.dumps({
        "framework": "torch", "version": torch.__version__, "kind": "step", "config": args.config, "params": n_params,
        "batch": batch, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
        "median_ms": round(med, 2), "min_ms": round(min(step), 2), "max_ms": round(max(step), 2),
        "cpu_ms": round(statistics.median(cpu), 2), "fwd_ms": round(statistics.median(fwd), 2),
        "bwd_ms": round(statistics.median(bwd), 2), "optim_ms": round(statistics.median(upd), 2),
        "peak_rss_mb": round(peak_mb, 1), "init_rss_mb": round(base_mb, 1), "final_loss": loss_v,
    }), flush=True)


if __name__ == "__main__":
    main()
