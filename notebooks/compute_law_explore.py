"""Exploration (not yet in `ditkd fit`): a compute law for the racing study's learning curves.

    pip install numpy scipy
    python3 notebooks/compute_law_explore.py results/race-study [SIGMA]

Law (f) of `ditkd fit`, E + exp(c - a ln N + b ln d) + B C^-beta, fails its lack-of-fit test on the
racing study's curves: its training term is the same for every shape, while deeper students sit
longer on a plateau and then fall faster. This script fits, on the curve points of the KD runs with
head dim >= 12 (the study's domain), with E fixed at the teacher's value (reference.json):

  additive, in FLOPs (law (f)):   E + exp(c - a ln N + b ln d) + exp(k - beta (ln C - 30))
  multiplicative, in steps (g):   E + exp(c - a ln N + b ln d) * (1 + exp(k + delta ln d - beta (ln S - 9)))

(g): the gap to the teacher at S steps is the converged gap G(N, d) times a training excess that
shrinks as S^-beta and grows with depth as d^delta. Residuals are on ln y; cells are (shape, step)
means weighted by their seed counts. It prints, per first step fitted, the RMSE per cell (compare
with the seed noise SIGMA, default 0.067), the leave-one-budget-out RMSE, the RMSE on a held-out
800k budget, and for (g) from 4,000 steps a 200-draw bootstrap over shapes (seed 0).
"""

import collections
import csv
import json
import os
import sys

import numpy as np
from scipy.optimize import least_squares

d = sys.argv[1] if len(sys.argv) > 1 else "results/race-study"
SIGMA = float(sys.argv[2]) if len(sys.argv) > 2 else 0.067
E = json.load(open(os.path.join(d, "reference.json")))["teacher"]["metrics"]["fid_proxy"]

# (budget, depth, width, seed, step) -> (params, train FLOPs, FID-proxy); copies count once.
pts = {}
for r in csv.DictReader(open(os.path.join(d, "curves.csv"))):
    if r["mode"] != "kd" or int(r["width"]) // int(r["heads"]) < 12:
        continue
    key = (int(r["budget"]), int(r["depth"]), int(r["width"]), int(r["heads"]), int(r["seed"]), float(r["step"]))
    pts[key] = (float(r["params"]), float(r["train_flops"]), float(r["fid_proxy"]))


def cells(min_step):
    """Columns: ln N, ln d, ln S, ln C, budget; the mean ln y per cell; the seeds per cell."""
    by = collections.defaultdict(list)
    for (b, dep, w, h, s, st), v in pts.items():
        if st >= min_step:
            by[(b, dep, w, h, st)].append(v)
    X, Y, W = [], [], []
    for (b, dep, w, h, st), v in sorted(by.items()):
        X.append((np.log(v[0][0]), np.log(dep), np.log(st), np.log(np.mean([x[1] for x in v])), b))
        Y.append(np.mean([np.log(x[2]) for x in v]))
        W.append(len(v))
    return np.array(X), np.array(Y), np.array(W, dtype=float)


FORMS = {
    "additive, FLOPs (f)": (
        lambda p, X: np.log(E + np.exp(p[0] - p[1] * X[:, 0] + p[2] * X[:, 1]) + np.exp(p[3] - p[4] * (X[:, 3] - 30))),
        [10, 0.8, -0.2, 3, 1],
        ["c", "a", "b", "k", "beta"],
    ),
    "multiplicative, steps (g)": (
        lambda p, X: np.log(
            E
            + np.exp(p[0] - p[1] * X[:, 0] + p[2] * X[:, 1])
            * (1 + np.exp(p[3] + p[5] * X[:, 1] - p[4] * (X[:, 2] - 9)))
        ),
        [10, 0.8, -0.2, 0, 1, 0.5],
        ["c", "a", "b", "k", "beta", "delta"],
    ),
}


def fit(f, p0, X, Y, W, m=None):
    m = np.ones(len(Y), bool) if m is None else m
    return least_squares(lambda p: np.sqrt(W[m]) * (Y[m] - f(p, X[m])), p0, max_nfev=20000).x


for min_step in (2000, 4000, 8000):
    X, Y, W = cells(min_step)
    for name, (f, p0, names) in FORMS.items():
        p = fit(f, p0, X, Y, W)
        rms = np.sqrt(np.sum(W * (Y - f(p, X)) ** 2) / W.sum())
        e2, ww = [], []
        for b in sorted(set(X[:, 4])):
            m = X[:, 4] != b
            q = fit(f, p, X, Y, W, m)
            e2 += list((Y[~m] - f(q, X[~m])) ** 2)
            ww += list(W[~m])
        lobo = np.sqrt(np.sum(np.array(e2) * ww) / np.sum(ww))
        m = X[:, 4] != 800000
        q = fit(f, p, X, Y, W, m)
        ho = np.sqrt(np.mean((Y[~m] - f(q, X[~m])) ** 2)) if (~m).any() else float("nan")
        coefs = ", ".join(f"{n} {v:.2f}" for n, v in zip(names, p))
        print(
            f"from step {min_step}: {name}: {len(Y)} cells, RMSE per cell {rms:.3f} (seed noise {SIGMA}), "
            f"LOBO {lobo:.3f}, held-out 800k {ho:.3f}; {coefs}"
        )

f, p0, names = FORMS["multiplicative, steps (g)"]
X, Y, W = cells(4000)
p = fit(f, p0, X, Y, W)
shapes = sorted(set((x[4], round(x[1], 6), round(x[0], 6)) for x in X))
rng = np.random.default_rng(0)
draws = []
for _ in range(200):
    pick = [shapes[i] for i in rng.integers(0, len(shapes), len(shapes))]
    idx = np.concatenate(
        [np.where((X[:, 4] == s[0]) & (np.round(X[:, 1], 6) == s[1]) & (np.round(X[:, 0], 6) == s[2]))[0] for s in pick]
    )
    draws.append(least_squares(lambda q: np.sqrt(W[idx]) * (Y[idx] - f(q, X[idx])), p, max_nfev=5000).x)
lo, hi = np.percentile(np.array(draws), [5, 95], axis=0)
print("(g) from step 4000, 90 % bootstrap over shapes: " + ", ".join(f"{n} {v:.2f} [{a:.2f}, {b:.2f}]" for n, v, a, b in zip(names, p, lo, hi)))
