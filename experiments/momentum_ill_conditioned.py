"""Momentum on ill-conditioned problems, and the speed/stability trade-off of large steps and large momentum.

Claims (/work/shared/reference/000_3cfbcdab51860f78.txt, Definition 6.19 "SGD with Momentum": "When different
coordinates (parameters) have very different scalings (i.e., when the problem is ill-conditioned), momentum can
help find a good direction of progress" (Sutskever et al. 2013); Concept 6.25: "large stepsize, large
momentum ... is faster but less stable, while small stepsize, small momentum ... is slower but more stable";
the same slides in 001_f4e8d95f5b8d410b.txt):
  1. with momentum (beta = 0.9, the notes' "common choice"; and the best momentum of the grid), gradient descent
     needs fewer steps than without, each at its best learning rate, on ill-conditioned problems (min_effect:
     2x fewer steps, judged on log10(steps); the notes give no size);
  2. the stability boundary: heavy ball (torch's SGD momentum, v <- g + beta v, theta <- theta - lr v) on a
     quadratic with largest curvature L converges iff lr < 2 (1 + beta) / L (from the roots of
     z^2 - (1 + beta - lr lambda) z + beta); measured on a fine grid of learning rates;
  3. speed versus stability: at a fixed learning rate, larger momentum reaches the tolerance in fewer steps
     (beta 0.9 vs 0, lr = 1 / L; min_effect 2x), and it makes the loss non-monotone (fraction of steps on
     which the loss rises, beta 0.99 vs 0 at lr = 1 / L; plain gradient descent on a quadratic with
     lr < 2 / L never raises it).

Setup: every update is ``jaxnets.train.optimizer("sgd", learning_rate=lr, momentum=beta)`` (optax), full batch,
vmapped over learning rates, momenta and starting points, in float32.
  - Quadratics f(x) = 1/2 sum_i lambda_i x_i^2 in d = 100 dimensions, eigenvalues log-spaced from 1/kappa
    to L = 1, kappa = 10, 100, 1000; starting points x0 ~ N(0, I), one per seed; "converged" when
    f(x_k) <= 1e-6 f(x0), within 20,000 steps.
  - Least squares on real data: a linear model 785 -> 10 (pixels in [0, 1] and a bias) fitted to one-hot labels
    of a stratified 1,000 MNIST-sample training digits, f(W) = 1/(2n) ||X W - Y||^2: a quadratic with Hessian
    H = X^T X / n (L = 39.3, the next eigenvalue 4.6, the median of the nonzero ones 0.0055, 542 of 785 above
    L / 1e6: ill-conditioned because the pixels have very different scales and a shared mean). Run in H's
    eigenbasis on the excess loss f(W) - f* (z = Q^T (W - W*), W* the minimum-norm solution in float64): the
    momentum update is linear and commutes with the rotation, so this is the same iteration; the script checks
    it against the iteration on W itself (first ``check_steps`` steps, beta 0.9, lr 1/L). Starting points
    W0 ~ N(0, 0.01^2), one per seed;
    "converged" when the excess loss is <= 10% of its initial value, within 10,000 steps (a first run with 5%:
    plain GD reached it at no learning rate; the tiny eigenvalues make every tighter tolerance slow).
  - Learning rates lr L in {0.1, 0.3, 0.5, 1, 1.5, 1.9, 2.5, 3, 3.5, 3.9}, momenta {0, 0.5, 0.9, 0.99}; the best
    learning rate of a momentum is the one with the lowest mean log10(steps) among those that converge on every
    seed. Boundary: kappa = 100, lr L = 0.01, 0.03, ..., 4.19 (no grid point on a theoretical boundary), 2,000
    steps, "stable" when f(x_T) <= f(x0); the measured boundary is the midpoint between the largest stable and
    the smallest unstable rate; the least-squares problem is checked at 0.98 and 1.02 times its theoretical
    boundary.
Protocol (``experiments/_protocol.py``): 5 seeds, paired (seed s: the same starting point for every learning
rate and momentum); steps-to-tolerance reported as mean +- sem over seeds; verdicts by ``_protocol.verdict``
(claims 1 and 3) and, for claim 2, "reproduced" when every seed's measured boundary is within one grid step
(0.02 / L) of 2 (1 + beta) / L for every beta, and the least-squares runs are stable at 0.98x and unstable at
1.02x. Deterministic iterations: nothing here depends on a BatchNorm snapshot or a last epoch.

Run: python -m experiments.momentum_ill_conditioned  ->  experiments/results/momentum_ill_conditioned/
Result (default config, 69 s wall on the shared 2-core CPU at load average 9; the run before it gave the same
numbers): steps to the tolerance, mean +- sem over 5 seeds, each momentum at its best learning rate (lr L):
  kappa 10:    beta 0: 29 +- 1 (1.5), 0.5: 20 +- 0 (1.0), 0.9: 124 +- 0 (0.3), 0.99: 1292 +- 4 (0.1);
  kappa 100:   beta 0: 191 +- 10 (1.9), 0.5: 68 +- 4 (2.5), 0.9: 125 +- 0 (0.3), 0.99: 1281 +- 9 (0.1);
  kappa 1000:  beta 0: 1404 +- 101 (1.9), 0.5: 530 +- 38 (2.5), 0.9: 128 +- 1 (2.5), 0.99: 1262 +- 12 (0.5);
  MNIST least squares (10% of the excess loss): beta 0: 2526 +- 205 (1.9), 0.5: 960 +- 78 (2.5),
  0.9: 141 +- 11 (3.5), 0.99: 188 +- 2 (3.5).
(1) beta 0.9 vs plain GD, paired log10(steps): kappa 10 not reproduced (0.23x: 4.3x SLOWER; its rate is stuck at
sqrt(0.9) per step whatever the lr), kappa 100 partly (1.52x faster, under the 2x min_effect), kappa 1000
reproduced (10.9x, 95% interval of log10 -1.13 to -0.94), MNIST least squares reproduced (17.9x). The best
momentum of the grid: kappa 10 partly (beta 0.5, 1.49x), kappa 100 reproduced (beta 0.5, 2.81x), kappa 1000 and
least squares reproduced (beta 0.9). Polyak's optimal heavy ball predicts 3.3x, 10x and 32x for kappa 10, 100,
1000: the gain grows with the conditioning, as the notes say, and the best momentum grows with it too.
(2) Divergence boundary reproduced: on the kappa = 100 quadratic every seed switches once from stable to
unstable between lr L = 1.99 and 2.01, 2.99 and 3.01, 3.79 and 3.81, 3.97 and 3.99 for beta 0, 0.5, 0.9, 0.99
(theory 2 (1 + beta): 2, 3, 3.8, 3.98); the least-squares runs are stable at 0.98 and unstable at 1.02 times
2 (1 + beta) / 39.33 for every beta and seed. Momentum RAISES the largest stable step on a quadratic. (On the
coarse grid, lr L = 3 with beta 0.5 sits exactly on its boundary: it never reaches the tolerance, and counts as
diverged, f_T > f_0, on 0, 0, 1 and 3 of 5 seeds of the four problems.)
(3) At lr 1/L, beta 0.9 vs 0: kappa 10 not reproduced (126 vs 45 steps), kappa 100 reproduced (2.9x), kappa 1000
(11.0x) and least squares (9.9x) reproduced; beta 0.99 is slower than 0.9 everywhere but least squares (1282-1299
steps on the quadratics). The loss rises on 21.0-21.2% of the steps with beta 0.99 on the quadratics (3.8 +- 0.2%
on least squares), 0.1-1.4% with beta 0.9, never with beta 0 or 0.5: reproduced (non-monotone loss). So "large
momentum is faster but less stable" holds as "faster up to the problem's best momentum, with a loss that
oscillates", not as "diverges at smaller steps" (full batch here: the gradient noise momentum would also
accumulate in SGD is not tested). The eigenbasis iteration matches the iteration on W to 3.2e-7 (relative) over
100 steps.
"""
from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import mnist_splits
from jaxnets import train

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, dim=100, kappas=(10, 100, 1000), betas=(0.0, 0.5, 0.9, 0.99),
    lr_factors=(0.1, 0.3, 0.5, 1.0, 1.5, 1.9, 2.5, 3.0, 3.5, 3.9),  # lr = factor / L
    tol=1e-6, max_steps=20000,
    boundary=dict(kappa=100, start=0.01, stop=4.2, step=0.02, steps=2000),
    least_squares=dict(n_train=1000, data_seed=0, init_std=0.01, tol=0.1, max_steps=10000,
                       boundary_factors=(0.98, 1.02), check_steps=100),
    verdict_beta=0.9, fixed_lr_factor=1.0, oscillation_beta=0.99,
    min_speedup=2.0,  # claims 1 and 3: at least 2x fewer steps (0.301 in log10)
)
FULL_CONFIG = dict(CONFIG, preset="full", dim=1000, kappas=(10, 100, 1000, 10000), max_steps=200000,
                   least_squares=dict(CONFIG["least_squares"], n_train=None, max_steps=100000))
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), dim=10, kappas=(10,), betas=(0.0, 0.9, 0.99),
                   lr_factors=(0.5, 1.0, 1.9, 3.5), max_steps=300,
                   boundary=dict(kappa=10, start=0.1, stop=4.2, step=0.2, steps=200),
                   least_squares=dict(CONFIG["least_squares"], n_train=100, max_steps=300, check_steps=10))


# ----------------------------------------------------------------------------------------------
# heavy ball on a diagonal quadratic, vmapped
# ----------------------------------------------------------------------------------------------
def diagonal_runs(eigs, starts, lrs, betas, *, steps: int, tol: float):
    """``train.optimizer("sgd", lr, momentum=beta)`` on f(z) = 1/2 sum_i eigs_i z_i^2 from each start.

    Args:
      eigs: [d] curvatures (>= 0). starts: [S, d, ...] starting points (trailing axes share ``eigs``).
      lrs, betas: [R] learning rates and momenta, one pair per run; every run is done from every start.
      steps: iterations. tol: "converged" at the first step k with f(z_k) <= tol * f(z_0).
    Returns: a dict of [S, R] arrays: ``steps`` (first step that meets the tolerance, -1 if none), ``final``
      (f(z_T) / f(z_0), nan when not finite), ``rises`` (fraction of steps on which f increased) and
      ``curve`` ([S, R, 200]: f(z_k) / f(z_0) at 200 log-spaced k).
    """
    marks = np.unique(np.geomspace(1, steps, 200).astype(int)) - 1
    marks = np.pad(marks, (0, 200 - len(marks)), mode="edge")
    out = _diagonal_runs(jnp.asarray(eigs, jnp.float32), jnp.asarray(starts, jnp.float32),
                         jnp.asarray(lrs, jnp.float32), jnp.asarray(betas, jnp.float32), jnp.asarray(marks),
                         jnp.asarray(tol, jnp.float32), steps=steps)
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()} | {"curve_steps": marks + 1}


@functools.partial(jax.jit, static_argnames="steps")
def _diagonal_runs(eigs, starts, lrs, betas, marks, tol, *, steps):
    """`diagonal_runs`, compiled once per shape and number of steps."""
    def loss(z):
        return 0.5 * jnp.sum(eigs.reshape(eigs.shape + (1,) * (z.ndim - 1)) * z * z)

    def one(z0, lr, beta):
        tx = train.optimizer("sgd", learning_rate=lr, momentum=beta)
        f0 = loss(z0)

        def body(carry, k):
            z, opt, hit, prev, rises = carry
            f, g = jax.value_and_grad(loss)(z)
            hit = jnp.where((hit < 0) & (f <= tol * f0), k, hit)
            rises = rises + (f > prev)
            u, opt = tx.update(g, opt, z)
            return (optax.apply_updates(z, u), opt, hit, f, rises), f / f0

        init = (z0, tx.init(z0), jnp.asarray(-1), f0, jnp.asarray(0))
        (z, _, hit, _, rises), ratios = jax.lax.scan(body, init, jnp.arange(steps))
        final = loss(z) / f0
        return {"steps": hit, "final": jnp.where(jnp.isfinite(final), final, jnp.nan),
                "rises": rises / steps, "curve": ratios[marks]}

    return jax.vmap(jax.vmap(one, in_axes=(None, 0, 0)), in_axes=(0, None, None))(starts, lrs, betas)


def quadratic(kappa: float, dim: int) -> np.ndarray:
    """Eigenvalues log-spaced from 1/kappa to 1 (L = 1 exactly)."""
    eigs = np.geomspace(1.0 / kappa, 1.0, dim)
    eigs[-1] = 1.0
    return eigs


def least_squares_problem(config, seeds):
    """MNIST least squares in H's eigenbasis: (eigs [p], starts [S, p, 10], the raw problem for the check)."""
    ls = config["least_squares"]
    train_set, _ = mnist_splits(ls["n_train"], None, seed=ls["data_seed"])
    n = len(train_set["label"])
    x = np.concatenate([train_set["image"].reshape(n, -1) / 255.0, np.ones((n, 1))], axis=1)
    y = np.eye(10)[train_set["label"]]
    h = x.T @ x / n
    eigs, q = np.linalg.eigh(h)                       # float64
    w_star = np.linalg.lstsq(x, y, rcond=None)[0]     # minimum-norm minimizer
    f_star = 0.5 * np.mean(np.sum((x @ w_star - y) ** 2, axis=1))
    eigs = np.clip(eigs, 0.0, None)                   # rounding makes a few null eigenvalues -1e-17
    starts = np.stack([q.T @ (ls["init_std"] * np.random.default_rng(s).standard_normal(w_star.shape) - w_star)
                       for s in seeds])
    raw = {"x": x, "y": y, "w_star": w_star, "f_star": f_star, "q": q}
    return eigs, starts, raw


def check_rotation(config, eigs, starts, raw, L):
    """The excess loss of the iteration on W itself (float32) against the eigenbasis iteration: the largest
    relative difference over the first ``check_steps`` steps (beta 0.9, lr 1/L, seed 0)."""
    k = config["least_squares"]["check_steps"]
    x, y = jnp.asarray(raw["x"], jnp.float32), jnp.asarray(raw["y"], jnp.float32)
    f_star = raw["f_star"]

    def loss(w):
        return 0.5 * jnp.mean(jnp.sum((x @ w - y) ** 2, axis=1))

    tx = train.optimizer("sgd", learning_rate=1.0 / L, momentum=0.9)
    w = jnp.asarray(raw["q"] @ starts[0] + raw["w_star"], jnp.float32)
    @jax.jit
    def step(w, opt):
        f, g = jax.value_and_grad(loss)(w)
        u, opt = tx.update(g, opt, w)
        return optax.apply_updates(w, u), opt, f

    opt, excess = tx.init(w), []
    for _ in range(k):
        w, opt, f = step(w, opt)
        excess.append(float(f) - f_star)
    rotated = diagonal_runs(eigs, starts[:1], [1.0 / L], [0.9], steps=k, tol=0.0)
    # the eigenbasis curve is f/f0 at log-spaced steps; compare there
    marks = rotated["curve_steps"] - 1
    direct = np.asarray(excess)[marks] / excess[0]
    return {"steps": k, "max_relative_difference": float(np.max(np.abs(direct / rotated["curve"][0, 0] - 1))),
            "direct_final_ratio": float(direct[-1]), "eigenbasis_final_ratio": float(rotated["curve"][0, 0, -1])}


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------
def main(config=CONFIG, *, out=None):
    """Steps to a tolerance over learning rates and momenta; the stability boundary; verdicts."""
    started = time.perf_counter()
    load_start = machine_load()
    seeds = list(config["seeds"])
    betas, factors = list(config["betas"]), list(config["lr_factors"])
    grid_beta = np.repeat(betas, len(factors))
    grid_factor = np.tile(factors, len(betas))

    problems = {}
    for kappa in config["kappas"]:
        eigs = quadratic(kappa, config["dim"])
        starts = np.stack([np.random.default_rng(s).standard_normal(config["dim"]) for s in seeds])
        problems[f"kappa={kappa}"] = dict(eigs=eigs, starts=starts, L=1.0, tol=config["tol"],
                                          max_steps=config["max_steps"], kappa=kappa)
    ls_eigs, ls_starts, raw = least_squares_problem(config, seeds)
    ls_L = float(ls_eigs[-1])
    nonzero = ls_eigs[ls_eigs > 1e-10 * ls_L]
    problems["mnist_least_squares"] = dict(
        eigs=ls_eigs, starts=ls_starts, L=ls_L, tol=config["least_squares"]["tol"],
        max_steps=config["least_squares"]["max_steps"], kappa=None,  # the smallest nonzero eigenvalue is rounding
        eigenvalues_top5=ls_eigs[::-1][:5].tolist(),
        eigenvalue_quantiles={q: float(np.quantile(nonzero, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        eigenvalues_above_1e6th_of_L=int((ls_eigs > 1e-6 * ls_L).sum()), eigenvalues=len(ls_eigs))

    sweeps = {}
    for name, p in problems.items():
        t0 = time.perf_counter()
        out_ = diagonal_runs(p["eigs"], p["starts"], grid_factor / p["L"], grid_beta, steps=p["max_steps"],
                             tol=p["tol"])
        sweeps[name] = table(config, out_, grid_beta, grid_factor)
        sweeps[name]["curve_steps"] = out_["curve_steps"]
        print(f"{name}: {time.perf_counter() - t0:.1f} s; best per beta "
              f"{ {b: v['best_lr_factor'] for b, v in sweeps[name]['best'].items()} }", flush=True)

    boundary = measure_boundary(config, seeds)
    ls_boundary = least_squares_boundary(config, ls_eigs, ls_starts, ls_L)
    rotation = check_rotation(config, ls_eigs, ls_starts, raw, ls_L)
    print(f"eigenbasis check: {rotation}", flush=True)

    claims = judge(config, sweeps, boundary, ls_boundary)
    results = {
        "problems": {n: {k: v for k, v in p.items() if k not in ("eigs", "starts")} for n, p in problems.items()},
        "theory": {n: theory(p["kappa"]) for n, p in problems.items() if p["kappa"] is not None},
        "sweeps": sweeps, "boundary": boundary, "least_squares_boundary": ls_boundary,
        "eigenbasis_check": rotation, "claims": claims,
        "machine_load": {"start": load_start, "end": machine_load()},
    }
    figures = {"steps_vs_lr": plot_steps(config, sweeps, problems),
               "stability_boundary": plot_boundary(config, boundary),
               "loss_curves": plot_curves(config, sweeps, problems)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def table(config, out, grid_beta, grid_factor) -> dict:
    """Per (beta, lr): steps to the tolerance over seeds, divergences; per beta its best lr."""
    rows = []
    for r, (beta, factor) in enumerate(zip(grid_beta, grid_factor)):
        steps = out["steps"][:, r]
        reached = steps >= 0
        final = out["final"][:, r]
        rows.append({"beta": float(beta), "lr_factor": float(factor), "steps_per_seed": steps.tolist(),
                     "reached": int(reached.sum()), "diverged": int((~np.isfinite(final) | (final > 1.0)).sum()),
                     "log10_steps": protocol.estimate(np.log10(steps[reached])) if reached.all() else None,
                     "steps": protocol.estimate(steps) if reached.all() else None,
                     "rises": protocol.estimate(out["rises"][:, r])})
    best = {}
    for beta in dict.fromkeys(float(b) for b in grid_beta):
        ok = [row for row in rows if row["beta"] == beta and row["steps"] is not None]
        if ok:
            top = min(ok, key=lambda row: row["log10_steps"]["mean"])
            r = rows.index(top)
            best[beta] = {"best_lr_factor": top["lr_factor"], "steps": top["steps"], "curve": out["curve"][:, r],
                          "steps_text": protocol.describe(top["steps"], digits=0),
                          "steps_per_seed": top["steps_per_seed"]}
        else:
            best[beta] = {"best_lr_factor": None, "steps": None, "steps_text": "not reached", "steps_per_seed": None}
    return {"rows": rows, "best": best}


def theory(kappa: float) -> dict:
    """Optimal rates on a quadratic with condition number kappa (Polyak 1964): GD with lr = 2 / (L + mu) and
    heavy ball with lr = 4 / (sqrt L + sqrt mu)^2, beta = ((sqrt kappa - 1) / (sqrt kappa + 1))^2."""
    s = math.sqrt(kappa)
    gd, hb = (kappa - 1) / (kappa + 1), (s - 1) / (s + 1)
    return {"gd_rate": gd, "heavy_ball_rate": hb, "heavy_ball_beta": hb ** 2,
            "heavy_ball_lr_times_L": 4 / (1 + 1 / s) ** 2,
            "predicted_speedup": math.log(hb) / math.log(gd) if gd > 0 else None}


def measure_boundary(config, seeds) -> dict:
    """Per beta and seed: the largest stable and smallest unstable lr L on the fine grid (kappa = 100)."""
    b = config["boundary"]
    eigs = quadratic(b["kappa"], config["dim"])
    starts = np.stack([np.random.default_rng(s).standard_normal(config["dim"]) for s in seeds])
    factors = np.arange(b["start"], b["stop"], b["step"])
    out = {}
    for beta in config["betas"]:
        res = diagonal_runs(eigs, starts, factors, np.full(len(factors), beta), steps=b["steps"], tol=0.0)
        stable = np.isfinite(res["final"]) & (res["final"] <= 1.0)   # [S, R]
        measured = []
        for s in range(len(seeds)):
            unstable = np.flatnonzero(~stable[s])
            first_bad = unstable[0] if len(unstable) else None
            last_ok = first_bad - 1 if first_bad is not None else len(factors) - 1
            clean = first_bad is not None and stable[s, :first_bad].all() and not stable[s, first_bad:].any()
            bad = None if first_bad is None else float(factors[first_bad])
            measured.append({"largest_stable": float(factors[last_ok]), "smallest_unstable": bad,
                             "boundary": None if bad is None else (float(factors[last_ok]) + bad) / 2,
                             "one_clean_switch": bool(clean)})
        theory_b = 2 * (1 + beta)
        out[str(beta)] = {"theory_lr_times_L": theory_b, "per_seed": measured,
                          "within_one_step": all(m["boundary"] is not None and abs(m["boundary"] - theory_b)
                                                 <= b["step"] for m in measured),
                          "stable_fraction": stable.mean(axis=0).tolist()}
    return {"lr_factors": factors.tolist(), "per_beta": out}


def least_squares_boundary(config, eigs, starts, L) -> dict:
    """Stable at 0.98 x 2 (1 + beta) / L and unstable at 1.02 x, for every beta and seed?"""
    ls, out = config["least_squares"], {}
    for beta in config["betas"]:
        lrs = [f * 2 * (1 + beta) / L for f in ls["boundary_factors"]]
        res = diagonal_runs(eigs, starts, lrs, [beta] * len(lrs), steps=config["boundary"]["steps"], tol=0.0)
        stable = np.isfinite(res["final"]) & (res["final"] <= 1.0)
        out[str(beta)] = {"factors": list(ls["boundary_factors"]), "stable_per_seed": stable.T.tolist(),
                          "as_predicted": bool(stable[:, 0].all() and not stable[:, 1].any())}
    return out


def judge(config, sweeps, boundary, ls_boundary) -> dict:
    """The three claims, with their paired differences (log10 steps) and verdicts."""
    min_effect = math.log10(config["min_speedup"])
    claims = {}
    vb = config["verdict_beta"]
    for name, sw in sweeps.items():
        a, b = sw["best"][0.0]["steps_per_seed"], sw["best"][vb]["steps_per_seed"]
        if a is None or b is None:
            claims[f"momentum_helps/{name}"] = {"verdict": "not tested",
                                                "reason": "a setting did not reach the tolerance on every seed"}
        else:
            d = protocol.paired(np.log10(a), np.log10(b))
            claims[f"momentum_helps/{name}"] = {
                "claim": f"beta {vb} at its best lr needs fewer steps than beta 0 at its best lr",
                "difference_log10_steps": d, "speedup_geometric_mean": 10 ** -d["mean"],
                "min_effect_log10": min_effect,
                "verdict": protocol.verdict(d, direction="lower", min_effect=min_effect)}
        tuned = [beta for beta in sw["best"] if beta > 0 and sw["best"][beta]["steps"] is not None]
        if a is not None and tuned:
            top = min(tuned, key=lambda beta: np.mean(np.log10(sw["best"][beta]["steps_per_seed"])))
            d = protocol.paired(np.log10(a), np.log10(sw["best"][top]["steps_per_seed"]))
            claims[f"tuned_momentum_helps/{name}"] = {
                "claim": "the best momentum on the grid, at its best lr, needs fewer steps than beta 0 at its best lr "
                         "(beta chosen on the same seeds)", "beta": top, "difference_log10_steps": d,
                "speedup_geometric_mean": 10 ** -d["mean"], "min_effect_log10": min_effect,
                "verdict": protocol.verdict(d, direction="lower", min_effect=min_effect)}
    ok = all(v["within_one_step"] for v in boundary["per_beta"].values())
    ls_ok = all(v["as_predicted"] for v in ls_boundary.values())
    claims["divergence_boundary"] = {
        "claim": "heavy ball converges iff lr < 2 (1 + beta) / L",
        "quadratic_within_one_grid_step": ok, "least_squares_as_predicted": ls_ok,
        "verdict": "reproduced" if ok and ls_ok else "not reproduced"}
    for name, sw in sweeps.items():
        rows = {(r["beta"], r["lr_factor"]): r for r in sw["rows"]}
        fixed = config["fixed_lr_factor"]
        a, b = rows.get((0.0, fixed)), rows.get((vb, fixed))
        if a and b and a["reached"] == b["reached"] == len(config["seeds"]):
            d = protocol.paired(np.log10(a["steps_per_seed"]), np.log10(b["steps_per_seed"]))
            claims[f"larger_momentum_faster_at_fixed_lr/{name}"] = {
                "claim": f"at lr {fixed}/L, beta {vb} needs fewer steps than beta 0", "difference_log10_steps": d,
                "speedup_geometric_mean": 10 ** -d["mean"], "min_effect_log10": min_effect,
                "verdict": protocol.verdict(d, direction="lower", min_effect=min_effect)}
        else:
            claims[f"larger_momentum_faster_at_fixed_lr/{name}"] = {
                "verdict": "not tested", "reason": "a setting did not reach the tolerance on every seed"}
        ob = config["oscillation_beta"]
        a, b = rows.get((0.0, fixed)), rows.get((ob, fixed))
        if a and b:
            d = protocol.paired(a["rises"]["values"], b["rises"]["values"])
            claims[f"larger_momentum_oscillates/{name}"] = {
                "claim": f"at lr {fixed}/L the loss rises on more steps with beta {ob} than with beta 0",
                "difference_fraction_of_steps": d, "min_effect": 0.0,
                "verdict": protocol.verdict(d, direction="higher", min_effect=0.0)}
    return claims


# ----------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------
def plot_steps(config, sweeps, problems):
    """Steps to the tolerance against lr L, one line per momentum (mean +- sem), theory boundaries dotted."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.6 * len(sweeps), 4.2), squeeze=False)
    for ax, (name, sw) in zip(axes[0], sweeps.items()):
        for beta in config["betas"]:
            rows = [r for r in sw["rows"] if r["beta"] == beta and r["steps"] is not None]
            if rows:
                x = [r["lr_factor"] for r in rows]
                per_seed = np.array([r["steps_per_seed"] for r in rows]).T
                h = protocol.band(ax, x, per_seed, label=f"beta {beta}", marker="o", markersize=3)
                ax.axvline(2 * (1 + beta), color=h.get_color(), linestyle=":", linewidth=1)
            bad = [r["lr_factor"] for r in sw["rows"] if r["beta"] == beta and r["diverged"]]
            if bad:
                ax.plot(bad, [problems[name]["max_steps"]] * len(bad), "x", color=h.get_color())
        ax.set(xlabel="learning rate x L", ylabel="steps to tolerance", yscale="log",
               title=f"{name}\n(x: diverged; dotted: 2 (1 + beta))")
    return finish_figure(fig, axes[0], grid={"which": "both"}, legend={"fontsize": 7})


def plot_boundary(config, boundary):
    """Fraction of seeds stable against lr L per momentum, with the theoretical boundary."""
    fig, ax = plt.subplots(figsize=(7, 4))
    x = boundary["lr_factors"]
    for beta, v in boundary["per_beta"].items():
        (h,) = ax.plot(x, v["stable_fraction"], label=f"beta {beta}")
        ax.axvline(v["theory_lr_times_L"], color=h.get_color(), linestyle=":")
    ax.set(xlabel="learning rate x L", ylabel="fraction of seeds with f(x_T) <= f(x_0)", ylim=(-0.05, 1.05),
           title=f"stability on the kappa = {config['boundary']['kappa']} quadratic (dotted: 2 (1 + beta) / L)")
    return finish_figure(fig, [ax], legend={"fontsize": 8})


def plot_curves(config, sweeps, problems):
    """f / f0 against the step for each momentum at its best lr (mean +- sem band), per problem."""
    fig, axes = plt.subplots(1, len(sweeps), figsize=(4.6 * len(sweeps), 4.2), squeeze=False)
    for ax, (name, sw) in zip(axes[0], sweeps.items()):
        for beta, best in sw["best"].items():
            if best["best_lr_factor"] is None:
                continue
            protocol.band(ax, sw["curve_steps"], np.log10(np.maximum(best["curve"], 1e-30)),
                          label=f"beta {beta}, lr {best['best_lr_factor']}/L")
        ax.axhline(math.log10(problems[name]["tol"]), color="gray", linestyle="--", linewidth=1)
        bottom = math.log10(problems[name]["tol"]) - 3   # below it every curve has met the tolerance
        ax.set(xlabel="step", xscale="log", ylabel="log10 (f - f*) / (f0 - f*)", ylim=(bottom, None),
               title=f"{name}: best lr per beta")
    return finish_figure(fig, axes[0], legend={"fontsize": 7})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
