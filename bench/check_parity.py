#!/usr/bin/env python3
"""Check that dit_jax.py computes the same function as dit_torch.py (same weights, same inputs):
forward output and the gradient of the MSE loss. Usage: python check_parity.py [--config A|B]"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import dit_jax  # noqa: E402
import dit_torch  # noqa: E402


def to_jax_name_value(name, t):
    a = t.detach().numpy()
    if name.endswith(".weight") and a.ndim == 2 and "embedding_table" not in name:
        a = a.T  # torch Linear [out, in] -> [in, out]
    if name.startswith("x_embedder."):
        name = name.replace("x_embedder.", "x_embedder.proj.")
    return name, jnp.asarray(a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(dit_torch.CONFIGS), default="A")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = dict(dit_torch.CONFIGS[args.config])
    cfg.pop("batch")
    model = dit_torch.DiT(**cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    params = dict(to_jax_name_value(n, p) for n, p in model.named_parameters())
    ref = dit_jax.init_params(jax.random.PRNGKey(0), cfg)
    assert sorted(params) == sorted(ref), set(params) ^ set(ref)
    assert all(params[k].shape == ref[k].shape for k in ref)

    rng = np.random.default_rng(0)
    C, S, B = cfg["in_channels"], cfg["input_size"], args.batch
    x = rng.standard_normal((B, C, S, S), dtype=np.float32)
    eps = rng.standard_normal((B, C, S, S), dtype=np.float32)
    t = rng.integers(0, 1000, B).astype(np.float32)
    y = rng.integers(0, cfg["num_classes"] + 1, B)  # include the null class

    out_t = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y))
    loss_t = F.mse_loss(out_t, torch.from_numpy(eps))
    loss_t.backward()

    fwd = dit_jax.make_forward(cfg)
    out_j = fwd(params, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y.astype(np.int32)))
    grads = jax.grad(lambda p: jnp.mean(jnp.square(fwd(p, jnp.asarray(x), jnp.asarray(t),
                                                        jnp.asarray(y.astype(np.int32))) - eps)))(params)

    d_out = float(np.max(np.abs(out_t.detach().numpy() - np.asarray(out_j))))
    scale = float(np.max(np.abs(out_t.detach().numpy())))
    worst = 0.0
    for n, p in model.named_parameters():
        jn, gj = to_jax_name_value(n, p.grad)
        g = np.asarray(grads[jn])
        worst = max(worst, float(np.max(np.abs(np.asarray(gj) - g)) / (np.max(np.abs(g)) + 1e-12)))
    print(f"config {args.config}: max |out_torch - out_jax| = {d_out:.2e} (max |out| {scale:.2e}); "
          f"worst relative grad diff {worst:.2e}")
    ok = d_out <= 1e-4 * max(scale, 1.0) and worst <= 1e-3
    print("parity OK" if ok else "parity FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
