"""A learning curve: does more training data mean less overfitting?

Claim (/work/shared/reference/000_3cfbcdab51860f78.txt, Concept 6.18 "More Data (by Data Augmentation)": "With
all else fixed, using more data usually leads to less overfitting"; overfitting as in Definition 6.3: "(training
loss) << (testing loss)"; the same slides in 001_f4e8d95f5b8d410b.txt): the generalisation gap -- validation
error minus training error of the final model -- shrinks as the number n of training examples grows.

Setup: one fixed net, ``models.create("mlp", hidden=(256,))`` (784-256-10, ReLU, PyTorch's default init,
203,530 parameters), trained on stratified subsets of n = 250, 500, 1,000, 2,000, 4,000 of the MNIST sample's
training digits (each drawn with ``data_seed`` 0; not nested), pixels standardised, and evaluated on the SAME
1,000 held-out digits. ``train.fit(..., seeds=[0, 1, 2, 3, 4])`` trains the five seeds of each n as one
population; seed s gives every n the same initial weights (paired across n). SGD momentum 0.9, batch 50, learning
rate 0.05 cosine-annealed to 0 over the run (the evaluation does not hang on a last epoch's step; the MLP has no
BatchNorm), for max(30 epochs, 600 steps): 600 steps for n <= 1,000 (120, 60, 30 epochs), 1,200 and 2,400 steps
for n = 2,000 and 4,000 (30 epochs). Measured on the final weights (``train.unstack`` + ``train.evaluate``, in
evaluation mode): training error and loss on the whole training subset, validation error and loss; the gap is
validation minus training. Protocol (``experiments/_protocol.py``): 5 seeds paired across n, every number mean
+- sem over seeds. Verdict: the error gap at n = 250 minus the gap at n = 4,000, paired over seeds, must be
positive at 95% and at least ``min_effect`` = 2 points (the notes give no size); the adjacent steps of n are
reported the same way.

Run: python -m experiments.learning_curve  ->  experiments/results/learning_curve/
Result (default config, 148 s wall on the shared 2-core CPU at load average 10-14; the run before it, 107 s,
gave the same numbers): reproduced. The net fits every training subset exactly (training error 0.0% on every n
and seed, training loss <= 0.0012), so the error gap is the validation error: 17.4 +- 0.2, 12.3 +- 0.3,
9.2 +- 0.2, 6.6 +- 0.1, 4.6 +- 0.1% for n = 250, 500, 1,000, 2,000, 4,000; validation loss 0.947 +- 0.006,
0.632 +- 0.005, 0.413 +- 0.006, 0.297 +- 0.003, 0.226 +- 0.004 (the loss gap, within 0.001). Gap at n = 4,000
minus gap at n = 250: -12.8 +- 0.2 points (95% interval -13.5 to -12.2; min_effect 2 points), loss gap
-0.721 +- 0.006; every doubling of n narrows the gap on its own (paired: -5.1 +- 0.2, -3.1 +- 0.4, -2.6 +- 0.2,
-2.0 +- 0.1 points), each step smaller than the one before: the mean gap falls about as n^-0.48 (log-log fit;
17.4 -> 4.6 points over a 16x range) and is still 4.6 points at n = 4,000.
"""
from __future__ import annotations

import itertools
import math
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import mnist_splits, standardize
from jaxnets import models, train

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, ns=(250, 500, 1000, 2000, 4000), n_val=None,
    hidden=(256,), batch_size=50, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine to 0 over the run",
    epochs=30, min_steps=600, mean=0.1307, std=0.3081,
    min_effect=0.02,  # 2 points of error gap between the smallest and the largest n
    evaluation="final weights after a cosine schedule to 0 (no BatchNorm), evaluation mode",
)
FULL_CONFIG = dict(CONFIG, preset="full", hidden=(512, 256), epochs=60, min_steps=2000)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), ns=(100, 200), n_val=200, hidden=(32,), epochs=1,
                   min_steps=4)


def main(config=CONFIG, *, out=None):
    """Train the same net on growing subsets; the training and validation errors and their gap."""
    started = time.perf_counter()
    load_start = machine_load()
    model = models.create("mlp", hidden=tuple(config["hidden"]))
    preprocess = standardize(config["mean"], config["std"])
    seeds, b = list(config["seeds"]), config["batch_size"]
    per_n = {}
    for n in config["ns"]:
        t0 = time.perf_counter()
        train_set, val_set = mnist_splits(n, config["n_val"], seed=config["data_seed"])
        epochs = max(config["epochs"], math.ceil(config["min_steps"] * b / n))
        steps = epochs * (n // b)
        tx = train.optimizer(config["optimizer"], learning_rate=train.schedules.cosine(config["lr"], steps),
                             momentum=config["momentum"])
        state, history = train.fit(model, train_set, epochs=epochs, batch_size=b, optimizer=tx, seeds=seeds,
                                   preprocess=preprocess, progress=False)
        rows = []
        for r, member_run in enumerate(history.runs):
            member = train.unstack(state, r)
            tr = train.evaluate(member, train_set, batch_size=500, preprocess=preprocess)
            va = train.evaluate(member, val_set, batch_size=500, preprocess=preprocess)
            rows.append({"seed": member_run["seed"], "train_error": 1 - tr["accuracy"], "train_loss": tr["loss"],
                         "val_error": 1 - va["accuracy"], "val_loss": va["loss"],
                         "error_gap": tr["accuracy"] - va["accuracy"], "loss_gap": va["loss"] - tr["loss"],
                         "running_train_loss": [row[r] for row in history.train_loss]})
        per_n[n] = {"n": n, "epochs": epochs, "steps": steps, "runs": rows, "seconds": time.perf_counter() - t0,
                    **{k: protocol.estimate([row[k] for row in rows])
                       for k in ("train_error", "val_error", "error_gap", "train_loss", "val_loss", "loss_gap")}}
        print(f"n {n:5d}: {epochs} epochs, {steps} steps; train error "
              f"{protocol.describe(per_n[n]['train_error'], scale=100, unit='%')}, val error "
              f"{protocol.describe(per_n[n]['val_error'], scale=100, unit='%')}, gap "
              f"{protocol.describe(per_n[n]['error_gap'], scale=100, unit=' points')} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)

    results = {"per_n": per_n, "claims": judge(config, per_n),
               "machine_load": {"start": load_start, "end": machine_load()}}
    formats = {"train_error": {"scale": 100, "unit": "%"}, "val_error": {"scale": 100, "unit": "%"},
               "error_gap": {"scale": 100, "unit": " points"}, "train_loss": {"digits": 3},
               "val_loss": {"digits": 3}, "loss_gap": {"digits": 3}}
    results["table"] = {n: {k: protocol.describe(v[k], **f) for k, f in formats.items()} for n, v in per_n.items()}
    return write_results(__file__, config, results, figures={"learning_curve": plot(config, per_n)}, out=out,
                         started=started)


def judge(config, per_n) -> dict:
    """Paired differences of the gap: smallest n minus largest n (the verdict), and each adjacent step."""
    ns = list(per_n)

    def gaps(n, key):
        return [row[key] for row in per_n[n]["runs"]]

    claims = {}
    d = protocol.paired(gaps(ns[0], "error_gap"), gaps(ns[-1], "error_gap"))
    claims["gap_shrinks"] = {
        "claim": f"the error gap (validation - training) at n = {ns[-1]} is smaller than at n = {ns[0]}",
        "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
        "min_effect": config["min_effect"],
        "verdict": protocol.verdict(d, direction="lower", min_effect=config["min_effect"])}
    d = protocol.paired(gaps(ns[0], "loss_gap"), gaps(ns[-1], "loss_gap"))
    claims["loss_gap_shrinks"] = {
        "claim": f"the loss gap at n = {ns[-1]} is smaller than at n = {ns[0]}", "difference": d,
        "difference_text": protocol.describe(d, digits=3), "min_effect": 0.0,
        "verdict": protocol.verdict(d, direction="lower")}
    claims["adjacent_steps"] = {}
    for a, b in itertools.pairwise(ns):
        d = protocol.paired(gaps(a, "error_gap"), gaps(b, "error_gap"))
        claims["adjacent_steps"][f"{a}->{b}"] = {"difference": d,
                                                 "difference_text": protocol.describe(d, scale=100, unit=" points"),
                                                 "verdict": protocol.verdict(d, direction="lower")}
    return claims


def plot(config, per_n):
    """Training and validation error against n (mean +- sem bands, log n), and the gap."""
    ns = list(per_n)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("train_error", "training error"), ("val_error", "validation error")):
        protocol.band(axes[0], ns, np.array([[row[key] for row in per_n[n]["runs"]] for n in ns]).T, label=label,
                      scale=100, marker="o")
    axes[0].set(xscale="log", xlabel="training examples n", ylabel="error (%)", ylim=(0, None),
                title=f"final model, mean +- sem over {len(config['seeds'])} seeds")
    protocol.band(axes[1], ns, np.array([[row["error_gap"] for row in per_n[n]["runs"]] for n in ns]).T,
                  label="error gap (points)", scale=100, marker="o")
    twin = axes[1].twinx()
    protocol.band(twin, ns, np.array([[row["loss_gap"] for row in per_n[n]["runs"]] for n in ns]).T,
                  label="loss gap", color="tab:red", marker="s", linestyle="--")
    axes[1].set(xscale="log", xlabel="training examples n", ylabel="validation - training error (points)",
                ylim=(0, None), title="generalisation gap")
    twin.set(ylabel="validation - training loss", ylim=(0, None))
    for ax in axes:
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.xaxis.set_minor_formatter(NullFormatter())  # only the n that were run are labelled
    twin.legend(loc="upper center", fontsize=8)
    return finish_figure(fig, axes, legend={"fontsize": 8})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
