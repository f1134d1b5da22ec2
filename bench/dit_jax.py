#!/usr/bin/env python3
"""JAX (CPU) reference of the ditkd DiT training step.

Same model and step as dit_torch.py, written in plain JAX (parameters are a dict pytree) with an
optax AdamW: the adaLN-Zero DiT of facebookresearch/DiT `models.py` (learn_sigma=False), the fixed
2D sin-cos pos_embed kept outside the trainable pytree. One step = forward + MSE(model(x, t, y),
eps) + grad + global-norm clip (1.0, as the candle AdamW does) + AdamW(lr 1e-4, betas (0.9,
0.999), eps 1e-8, weight_decay 0), all in one jitted function with the parameters and optimizer
state donated. Weights are drawn N(0, 0.02) like the candle bench.

Usage: python dit_jax.py --config A --iters 10 --warmup 2 --threads 2
The first warm-up step includes XLA compilation (reported separately as compile_ms).
The last stdout line is one JSON object.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

CONFIGS = {
    "A": dict(input_size=28, patch_size=4, in_channels=1, hidden_size=128, depth=4, num_heads=4,
              mlp_ratio=4.0, num_classes=10, batch=128),
    "B": dict(input_size=32, patch_size=2, in_channels=3, hidden_size=256, depth=8, num_heads=4,
              mlp_ratio=4.0, num_classes=10, batch=64),
}
FREQ_DIM = 256


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="A")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="global-norm clip as in the candle AdamW (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def limit_threads(t):
    """Must run before `import jax`. XLA:CPU sizes its intra-op pool from the schedulable CPUs, so
    the affinity mask is what really bounds it; the flags cover the Eigen path of older runtimes."""
    flags = os.environ.get("XLA_FLAGS", "")
    # XLA_FLAGS must start with "--" (else it is read as a file name); the bare
    # intra_op_parallelism_threads=T word after it is tolerated (the well-known recipe).
    eigen = "false" if t == 1 else "true"
    flags += f" --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={t}"
    os.environ["XLA_FLAGS"] = flags.strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(t)
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if t < len(cpus):
            os.sched_setaffinity(0, cpus[:t])
    except (AttributeError, OSError):
        pass


if __name__ == "__main__":  # thread limits must be in place before jax is imported
    ARGS = parse_args()
    limit_threads(ARGS.threads)

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402


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


# ---------------------------------------------------------------- parameters
def init_params(key, cfg):
    d, c, p = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"]
    h = int(d * cfg["mlp_ratio"])
    shapes = {
        "x_embedder.proj.weight": (d, c, p, p),  # OIHW, as torch's Conv2d
        "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (FREQ_DIM, d),  # stored [in, out]
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (cfg["num_classes"] + 1, d),
        "final_layer.adaLN_modulation.1.weight": (d, 2 * d),
        "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.linear.weight": (d, p * p * c),
        "final_layer.linear.bias": (p * p * c,),
    }
    for i in range(cfg["depth"]):
        b = f"blocks.{i}."
        shapes.update({
            b + "attn.qkv.weight": (d, 3 * d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "mlp.fc1.weight": (d, h), b + "mlp.fc1.bias": (h,),
            b + "mlp.fc2.weight": (h, d), b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.1.weight": (d, 6 * d), b + "adaLN_modulation.1.bias": (6 * d,),
        })
    keys = jax.random.split(key, len(shapes))
    return {name: 0.02 * jax.random.normal(k, shape, jnp.float32)
            for k, (name, shape) in zip(keys, sorted(shapes.items()))}


def analytic_params(cfg):
    d, c, p2 = cfg["hidden_size"], cfg["in_channels"], cfg["patch_size"] ** 2
    h = int(d * cfg["mlp_ratio"])
    x_embed = d * c * p2 + d
    t_embed = FREQ_DIM * d + d + d * d + d
    y_embed = (cfg["num_classes"] + 1) * d
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d) + (6 * d * d + 6 * d)
    final = (2 * d * d + 2 * d) + (d * p2 * c + p2 * c)
    return x_embed + t_embed + y_embed + cfg["depth"] * block + final


# ---------------------------------------------------------------- model
def linear(prm, name, x):
    return x @ prm[name + ".weight"] + prm[name + ".bias"]


def layer_norm(x, eps=1e-6):  # no affine
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def modulate(x, shift, scale):
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def timestep_embedding(t, dim=FREQ_DIM, max_period=10000):
    half = dim // 2
    freqs = jnp.exp(-jnp.log(float(max_period)) * jnp.arange(0, half, dtype=jnp.float32) / half)
    args = t[:, None].astype(jnp.float32) * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def attention(prm, b, x, num_heads):
    B, N, C = x.shape
    hd = C // num_heads
    qkv = linear(prm, b + "attn.qkv", x).reshape(B, N, 3, num_heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * hd ** -0.5) @ jnp.swapaxes(k, -2, -1)  # plain attention
    attn = jax.nn.softmax(attn, axis=-1)
    x = jnp.swapaxes(attn @ v, 1, 2).reshape(B, N, C)
    return linear(prm, b + "attn.proj", x)


def dit_block(prm, b, x, c, num_heads):
    mod = linear(prm, b + "adaLN_modulation.1", jax.nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = jnp.split(mod, 6, axis=1)
    x = x + gate_msa[:, None, :] * attention(prm, b, modulate(layer_norm(x), shift_msa, scale_msa), num_heads)
    hmid = jax.nn.gelu(linear(prm, b + "mlp.fc1", modulate(layer_norm(x), shift_mlp, scale_mlp)), approximate=True)
    x = x + gate_mlp[:, None, :] * linear(prm, b + "mlp.fc2", hmid)
    return x


def make_forward(cfg):
    p, c_out, depth, heads = cfg["patch_size"], cfg["in_channels"], cfg["depth"], cfg["num_heads"]
    pos_embed = jnp.asarray(get_2d_sincos_pos_embed(cfg["hidden_size"], cfg["input_size"] // p),
                            dtype=jnp.float32)[None]  # constant, not in the trainable pytree

    def forward(prm, x, t, y):
        x = jax.lax.conv_general_dilated(x, prm["x_embedder.proj.weight"], window_strides=(p, p),
                                         padding="VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        x = x + prm["x_embedder.proj.bias"][None, :, None, None]
        n, d = x.shape[0], x.shape[1]
        x = x.reshape(n, d, -1).transpose(0, 2, 1) + pos_embed  # (N, T, D)
        temb = timestep_embedding(t)
        temb = linear(prm, "t_embedder.mlp.2", jax.nn.silu(linear(prm, "t_embedder.mlp.0", temb)))
        c = temb + prm["y_embedder.embedding_table.weight"][y]
        for i in range(depth):
            x = dit_block(prm, f"blocks.{i}.", x, c, heads)
        shift, scale = jnp.split(linear(prm, "final_layer.adaLN_modulation.1", jax.nn.silu(c)), 2, axis=1)
        x = linear(prm, "final_layer.linear", modulate(layer_norm(x), shift, scale))
        # unpatchify
        hh = ww = int(round(x.shape[1] ** 0.5))
        x = x.reshape(n, hh, ww, p, p, c_out)
        x = jnp.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, c_out, hh * p, ww * p)

    return forward


def main(args):
    cfg = dict(CONFIGS[args.config])
    batch = cfg["batch"]
    params = init_params(jax.random.PRNGKey(args.seed), cfg)
    n_params = sum(int(v.size) for v in params.values())
    expected = analytic_params(cfg)
    assert n_params == expected, (n_params, expected)
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.devices()[0]}), threads {args.threads} "
          f"(XLA_FLAGS='{os.environ.get('XLA_FLAGS', '')}', cpus {len(os.sched_getaffinity(0))}), "
          f"config {args.config}: {n_params:,} trainable params (analytic {expected:,}), batch {batch}", flush=True)

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # after imports + init
    forward = make_forward(cfg)
    parts = []
    if args.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(args.grad_clip))
    parts.append(optax.adamw(1e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0))
    tx = optax.chain(*parts)
    opt_state = tx.init(params)

    def loss_fn(prm, x, t, y, eps):
        return jnp.mean(jnp.square(forward(prm, x, t, y) - eps))

    def train_step(prm, state, x, t, y, eps):
        loss, grads = jax.value_and_grad(loss_fn)(prm, x, t, y, eps)
        updates, state = tx.update(grads, state, prm)
        return optax.apply_updates(prm, updates), state, loss

    step_fn = jax.jit(train_step, donate_argnums=(0, 1))

    rng = np.random.default_rng(args.seed)
    C, S = cfg["in_channels"], cfg["input_size"]
    step, compile_ms = [], None
    loss_v = float("nan")
    for i in range(args.warmup + args.iters):
        x = jnp.asarray(rng.standard_normal((batch, C, S, S), dtype=np.float32))
        eps = jnp.asarray(rng.standard_normal((batch, C, S, S), dtype=np.float32))
        t = jnp.asarray(rng.integers(0, 1000, batch).astype(np.float32))
        y = jnp.asarray(rng.integers(0, cfg["num_classes"], batch).astype(np.int32))
        jax.block_until_ready((x, eps, t, y))
        t0 = time.perf_counter()
        params, opt_state, loss = step_fn(params, opt_state, x, t, y, eps)
        loss_v = float(jax.block_until_ready(loss))
        jax.block_until_ready(params)
        dt = (time.perf_counter() - t0) * 1e3
        if i == 0:
            compile_ms = dt
        if i >= args.warmup:
            step.append(dt)
        print(f"  step {i}{' (warm-up)' if i < args.warmup else ''}: {dt:.1f} ms, loss {loss_v:.4f}", flush=True)

    if not step:
        sys.exit("--iters must be >= 1")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    med = statistics.median(step)
    print(f"config {args.config}: step {med:.1f} ms (fwd+bwd+clip+adamw, one jitted call), "
          f"first call incl. compile {compile_ms:.0f} ms, peak RSS {peak_mb:.0f} MB (after imports+init {base_mb:.0f} MB)")
    print(json.dumps({
        "framework": "jax", "version": jax.__version__, "config": args.config, "params": n_params,
        "batch": batch, "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
        "median_ms": round(med, 2), "compile_ms": round(compile_ms, 1),
        "peak_rss_mb": round(peak_mb, 1), "init_rss_mb": round(base_mb, 1), "final_loss": loss_v,
    }), flush=True)


if __name__ == "__main__":
    main(ARGS)
