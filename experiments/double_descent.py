"""Double descent (Belkin, Hsu, Ma & Mandal, PNAS 2019) on the MNIST sample that ships with jaxnets.

Data: ``data.split(mnist_sample(), fraction=0.2, seed=0)`` gives 4,000 training and 1,000 held-out test
digits (stratified); the default run trains on a stratified ``n_train = 1,000`` of the 4,000 (100 per
class), ``--full`` on all 4,000 (Belkin's n). Pixels are scaled to [0, 1] and flattened (d = 784); targets
are one-hot (K = 10). Risks are the squared loss ``mean_i ||f(x_i) - onehot(y_i)||^2`` (summed over the K
outputs, Belkin's choice) and the zero-one loss of ``argmax f(x)``.

(a) Random features. ``phi(x) = relu(x W)`` with a FIXED He-normal ``W`` [784, H] (features nested: the
first H columns of one draw), readout ``A`` [H, K] by minimum-norm least squares (``jnp.linalg.lstsq`` in
float64). Interpolation threshold: each class column solves ``Phi a_k = y_k``, n equations in H unknowns,
with ``rank Phi = min(n, H)`` for random features; so the training set is fit exactly iff ``H >= n``. The
threshold is ``H = n`` (``n K`` readout parameters). Below it the least-squares solution is unique; above
it the minimum-norm one is picked among infinitely many interpolants, and its norm falls as H grows. At
``H = n``, ``Phi`` is square and nearly singular, so the interpolant's norm, and the test loss, peak.

(b) A trained one-hidden-layer ReLU network with H units, ``(784 + 1) H + (H + 1) K`` parameters,
threshold near ``n K`` (Belkin: 40,000 at n = 4,000, H ~ 50; here n = 1,000: 10,000, H ~ 12.6), trained
on the squared loss with FULL-BATCH Adam and a cosine-decayed rate for a fixed number of steps, in a small
jitted loop written here (a ``lax.scan`` over steps: the whole training set is one batch, no data
pipeline). Belkin et al. used SGD for up to 6,000 epochs and *weight reuse*: below the threshold each
network starts from the trained next-smaller one (new units N(0, 0.01)); at and above it from Glorot-uniform
weights. We do the same (``weight_reuse=True``).

Run: python -m experiments.double_descent  ->  experiments/results/double_descent/
Result (default config, n = 1,000, a quiet 2-core CPU, 76 s): (a) reproduced, sharply: the test squared
loss goes 0.46 (best below, H = 200) -> 4,250 at H = n (condition number 1.3e6, readout norm 1,009) -> 0.24
at H = 10 n; the test error 16.8% -> 89.6% -> 7.6%. (b) partly: the test squared loss peaks at 0.87 at
H = 12 (9,550 parameters, just below n K; train loss 0.014) and falls to 0.36 at H = 50, below the best
under-parameterized 0.63; but the networks at the threshold do not interpolate in 2,500 full-batch steps
(train loss 0.096 at H = 13) and the test error shows no peak (30.9%, 28.6%, 23.3%, 15.1% at H = 7, 10, 13,
100). Details: experiments/README.md.
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

from experiments._common import run, write_results
from jaxnets import data, init, layers

CONFIG = dict(
    preset="default", seed=0, n_train=1000, num_classes=10,
    # (a) random features: H as a multiple of n_train, dense around the threshold H = n.
    rf_widths_over_n=(0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98, 1.0, 1.02, 1.05, 1.1, 1.2, 1.5, 2, 3, 5, 10),
    # (b) trained network: hidden units (threshold H ~ 12.6 at n = 1,000).
    nn_hidden=(1, 2, 4, 7, 10, 12, 13, 14, 16, 20, 30, 50, 100),
    steps=2500, lr=1e-3, weight_reuse=True, reuse_std=0.1, log_every=25,
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=4000,
                   nn_hidden=(2, 5, 10, 20, 30, 40, 45, 50, 55, 60, 80, 100, 200, 500, 1000), steps=20000)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=200, rf_widths_over_n=(0.5, 1.0), nn_hidden=(1, 2),
                   steps=8, log_every=4)  # threshold 2,000 parameters: H = 1 from Glorot, H = 2 by weight reuse


def load(n_train: int, seed: int):
    """Flattened [0, 1] images and labels: a stratified ``n_train`` of the 4,000 training digits, and the
    1,000 held-out ones."""
    train, test = data.split(data.mnist_sample(), fraction=0.2, seed=0)
    if n_train < len(train["label"]):
        train, _ = data.split(train, fraction=1 - n_train / len(train["label"]), seed=seed)
    flat = lambda split: (jnp.asarray(split["image"].reshape(len(split["label"]), -1), jnp.float32) / 255.0,
                          jnp.asarray(split["label"]))
    return flat(train), flat(test)


@functools.partial(jax.jit, static_argnums=2)
def _risks(pred: jax.Array, labels: jax.Array, num_classes: int):
    onehot = jax.nn.one_hot(labels, num_classes, dtype=pred.dtype)
    return layers.mse_loss(pred, onehot, reduction="sum") / labels.shape[0], layers.accuracy(pred, labels)


def risks(pred: jax.Array, labels: jax.Array, num_classes: int) -> dict:
    """Squared loss (summed over the K outputs, averaged over examples) and zero-one loss, as floats."""
    squared, accuracy = _risks(pred, labels, num_classes)
    n = len(labels)
    mistakes = n - round(float(accuracy) * n)  # an exact count: float32 1 - accuracy can come out as -5e-8
    return {"squared": float(squared), "zero_one": mistakes / n}


@jax.jit
def _min_norm_readout(x: jax.Array, x_test: jax.Array, w: jax.Array, onehot: jax.Array):
    """Train and test predictions of relu(x w) with the min-norm least-squares readout (call under x64)."""
    # Features in float32 like a network's; the solve in float64: at H = n, Phi is nearly singular
    # (condition ~1e6), and float32's lstsq cutoff (eps * max(n, H) relative) would truncate exactly the
    # directions that make the peak.
    phi = layers.relu(layers.linear(x, w)).astype(jnp.float64)
    phi_test = layers.relu(layers.linear(x_test, w)).astype(jnp.float64)
    readout, _, rank, sv = jnp.linalg.lstsq(phi, onehot)
    return phi @ readout, phi_test @ readout, rank, sv[0] / sv[-1], jnp.linalg.norm(readout)


def random_features(config, train, test, key) -> list[dict]:
    """(a): min-norm least-squares readout of fixed random ReLU features, for each width H."""
    (x, y), (x_test, y_test) = train, test
    n, k = len(y), config["num_classes"]
    widths = sorted({max(1, round(r * n)) for r in config["rf_widths_over_n"]})
    w = init.he_normal()(key, (x.shape[1], widths[-1]))
    rows = []
    for h in widths:
        start = time.perf_counter()
        with jax.enable_x64(True):
            pred, pred_test, rank, condition, norm = _min_norm_readout(
                x, x_test, w[:, :h], jax.nn.one_hot(y, k, dtype=jnp.float64))
            row = {"H": h, "H_over_n": h / n, "rank": int(rank), "condition_number": float(condition),
                   "readout_norm": float(norm), "train": risks(pred, y, k), "test": risks(pred_test, y_test, k)}
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(f"RF H={h:6d} ({h / n:5.2f} n) rank {row['rank']:5d} cond {row['condition_number']:9.3g} "
              f"|A| {row['readout_norm']:9.3g} train {row['train']['squared']:9.3g} test {row['test']['squared']:9.3g}"
              f" test err {row['test']['zero_one']:.3f}", flush=True)
    return rows


def param_count(h: int, d: int, k: int) -> int:
    return (d + 1) * h + (h + 1) * k


def mlp(params: dict, x: jax.Array) -> jax.Array:
    """``relu(x W1 + b1) W2 + b2``."""
    return layers.linear(layers.relu(layers.linear(x, params["w1"], params["b1"])), params["w2"], params["b2"])


def initial_params(key, h: int, d: int, k: int, previous: dict | None, reuse_std: float) -> dict:
    """Glorot-uniform weights and zero biases, or (weight reuse) ``previous`` plus new N(0, reuse_std^2) units."""
    k1, k2 = jax.random.split(key)
    if previous is None:
        return {"w1": init.xavier_uniform()(k1, (d, h)), "b1": jnp.zeros(h),
                "w2": init.xavier_uniform()(k2, (h, k)), "b2": jnp.zeros(k)}
    new = h - previous["w1"].shape[1]
    return {"w1": jnp.concatenate([previous["w1"], reuse_std * jax.random.normal(k1, (d, new))], axis=1),
            "b1": jnp.concatenate([previous["b1"], jnp.zeros(new)]),
            "w2": jnp.concatenate([previous["w2"], reuse_std * jax.random.normal(k2, (new, k))], axis=0),
            "b2": previous["b2"]}


def train_full_batch(params: dict, x: jax.Array, onehot: jax.Array, *, steps: int, lr: float, log_every: int):
    """``steps`` full-batch Adam steps on the squared loss; returns the params and the loss every ``log_every``."""
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss_fn(p, x, onehot):
        return layers.mse_loss(mlp(p, x), onehot, reduction="sum") / x.shape[0]

    @jax.jit
    def fit(params, x, onehot):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, x, onehot)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return params, losses[::log_every]

    return fit(params, x, onehot)


def trained_networks(config, train, test, key) -> list[dict]:
    """(b): one-hidden-layer networks of each width, trained to (near) zero training loss."""
    (x, y), (x_test, y_test) = train, test
    n, d, k = len(y), x.shape[1], config["num_classes"]
    onehot = jax.nn.one_hot(y, k)
    rows, previous = [], None
    for h in sorted(config["nn_hidden"]):
        start = time.perf_counter()
        reuse = config["weight_reuse"] and previous is not None and param_count(h, d, k) < n * k
        params = initial_params(jax.random.fold_in(key, h), h, d, k, previous if reuse else None,
                                config["reuse_std"])
        params, curve = train_full_batch(params, x, onehot, steps=config["steps"], lr=config["lr"],
                                         log_every=config["log_every"])
        previous = params
        row = {"H": h, "params": param_count(h, d, k), "init": "reuse" if reuse else "glorot",
               "train": risks(mlp(params, x), y, k), "test": risks(mlp(params, x_test), y_test, k),
               "loss_curve": np.asarray(curve), "seconds": time.perf_counter() - start}
        rows.append(row)
        print(f"NN H={h:5d} params {row['params']:7d} ({row['init']:6s}) train {row['train']['squared']:9.3g} "
              f"test {row['test']['squared']:7.3g} train err {row['train']['zero_one']:.3f} "
              f"test err {row['test']['zero_one']:.3f} [{row['seconds']:.0f} s]", flush=True)
    return rows


def summarize(rows: list[dict], size: str, threshold: float) -> dict:
    """Test risks below, at and above the threshold: the numbers the verdict is written from."""
    def best(group, risk):
        return min(group, key=lambda r: r["test"][risk]) if group else None

    nearest = min(rows, key=lambda r: abs(math.log(r[size] / threshold)))
    below = [r for r in rows if r[size] < nearest[size]]
    above = [r for r in rows if r[size] > nearest[size]]
    out = {"threshold": threshold, "nearest_to_threshold": nearest[size],
           "peak_test_squared_at": max(rows, key=lambda r: r["test"]["squared"])[size],
           "peak_test_zero_one_at": max(rows, key=lambda r: r["test"]["zero_one"])[size],
           "max_train_squared_at_or_above_threshold": max(r["train"]["squared"] for r in rows
                                                          if r[size] >= nearest[size])}
    for risk in ("squared", "zero_one"):
        lo, hi = best(below, risk), best(above, risk)
        out[risk] = {"test_at_threshold": nearest["test"][risk],
                     "best_test_below": lo and lo["test"][risk], "best_below_at": lo and lo[size],
                     "best_test_above": hi and hi["test"][risk], "best_above_at": hi and hi[size],
                     "test_at_largest": rows[-1]["test"][risk]}
    return out


def main(config=CONFIG, *, out=None):
    """Train and test risk against model size across the interpolation threshold, (a) and (b)."""
    started = time.perf_counter()
    key_rf, key_nn = jax.random.split(jax.random.key(config["seed"]))
    train, test = load(config["n_train"], config["seed"])
    n, d, k = len(train[1]), train[0].shape[1], config["num_classes"]
    rf = random_features(config, train, test, key_rf)
    nn = trained_networks(config, train, test, key_nn)
    h_star = (n * k - k) / (d + 1 + k)  # param_count(H) = n K
    results = {
        "n_train": n, "n_test": len(test[1]), "d": d, "K": k,
        "random_features": rf, "trained": nn,
        "summary_random_features": summarize(rf, "H", n),
        "summary_trained": dict(summarize(nn, "params", n * k), hidden_at_threshold=h_star),
    }
    print({key: results[key] for key in ("summary_random_features", "summary_trained")})
    figures = {"double_descent": plot(rf, nn, n, k, h_star), "training_curves": plot_curves(nn, config, n * k)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def plot(rf: list, nn: list, n: int, k: int, h_star: float):
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    panels = [(rf, "H", n, f"random ReLU features H (threshold H = n = {n})", "(a) random features, min-norm readout"),
              (nn, "params", n * k, f"parameters (threshold n K = {n * k}, H = {h_star:.1f})",
               "(b) trained 1-hidden-layer ReLU net")]
    floor = 1e-8  # an interpolating model's training loss is ~1e-28: drawn at this floor
    for row, (rows, size, threshold, xlabel, title) in zip(axes, panels):
        xs = [r[size] for r in rows]
        for ax, risk, ylabel in ((row[0], "squared", "squared loss"), (row[1], "zero_one", "zero-one loss")):
            ax.plot(xs, [max(r["train"][risk], floor) for r in rows], "o-", color="C0", label="train")
            ax.plot(xs, [r["test"][risk] for r in rows], "o-", color="C3", label="test")
            ax.axvline(threshold, color="k", ls="--", lw=1, label="interpolation threshold")
            ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
            ax.grid(alpha=0.3)
        row[0].set_yscale("log")
        row[0].legend()
    fig.suptitle(f"Double descent on the MNIST sample: n = {n} training, 1000 test digits; squared loss on one-hot "
                 f"targets (train values below {floor:g} drawn at {floor:g})")
    fig.tight_layout()
    return fig


def plot_curves(nn: list, config: dict, threshold: int):
    fig, ax = plt.subplots(figsize=(8, 5))
    cmap = plt.get_cmap("viridis")
    for i, r in enumerate(nn):
        steps = np.arange(len(r["loss_curve"])) * config["log_every"]
        ax.plot(steps, r["loss_curve"], color=cmap(i / max(len(nn) - 1, 1)),
                ls="-" if r["params"] >= threshold else ":", label=f"H={r['H']} ({r['init']})")
    ax.set(yscale="log", xlabel="full-batch Adam step", ylabel="training squared loss",
           title="training curves (dotted: below the threshold)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
