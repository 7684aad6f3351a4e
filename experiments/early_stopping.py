"""Does early stopping beat training to the end, more so with noisy labels? Does the test error descend twice
over the epochs (epoch-wise double descent)?

Claims (lecture notes, /work/shared/reference/000_3cfbcdab51860f78.txt, Definitions 6.16 and 6.17):
"SGD fits data, so too many iterations lead to overfitting", hence stop early; but "an epochwise double
descent has been observed" (Nakkiran et al., ICLR 2020, with label noise), "so perhaps one should stop SGD
early or very late".

Setup: the same stratified 500 training digits for every seed (``mnist_splits(n_train=500, seed=0)``); the
1,000 held-out digits split (stratified) into 500 for validation (what early stopping watches) and 500 for
test (what is reported, so choosing an epoch on the validation set does not flatter the result). Two
training sets per seed: the clean labels, and the same digits with ``label_noise`` = 20% of their labels
(100) moved to a uniformly drawn OTHER class, drawn afresh for each seed (``noisy_labels(..., seed=s)``).
Model: an MLP 784-512-10 (ReLU, 407k parameters, no BatchNorm; the notes' own double-descent example is an
MLP on MNIST), Adam at a constant rate 1e-3, batches of 50, ``epochs`` = 500 epochs (5,000 steps).
Protocol (experiments/_protocol.py): 5 paired seeds; seed s gives both training sets the same initial
weights and batch order. Evaluation: the network has no BatchNorm, so every epoch's evaluation is the
network itself (no running statistics to go stale), at the constant rate that early stopping and Nakkiran
et al. presuppose; no annealing.
For each training set and seed, with ``train.fit``:
  1. the long run, ``epochs`` epochs, with the TEST set as its ``val_data``: ``History.val_error`` is the
     test error after every epoch (no checkpoint restored);
  2. the early-stopped run, ``EarlyStopping("val_error", patience)`` on the validation set: ``fit`` halts
     after ``patience`` epochs without improvement and returns the best epoch e*. Same seed and data, so
     its training is a prefix of run 1 (checked: the training losses agree exactly), and the test error of
     the early-stopped network is run 1's test error at epoch e*.
Claims judged by ``_protocol.verdict`` on the per-seed paired differences (min_effect: the notes give no
size; the sizes below are this script's, stated in ``CONFIG["min_effect"]``):
  (1) early stopping helps, with and without label noise: test error at e* minus test error at the last
      epoch < 0, by at least 1 point (5 of the 500 test digits);
  (2) it helps more with noisy labels: gain(noisy) - gain(clean) > 0 by at least 1 point, gain = final - e*;
  (3) epoch-wise double descent: Nakkiran et al.'s test error peaks near the epoch at which the training set
      is fitted (the interpolation epoch t, here the first epoch with a training error <= 1%, labels as
      given) and descends again after it. Tested with windows fixed before looking at the test curve: the
      mean test error over the last ``late_epochs`` epochs minus its mean over epochs [t, 2t] < 0 by at
      least 2 points. Why the budget covers it: Nakkiran et al.'s peak sits where the training error
      reaches ~0 and their second descent is under way within a decade of epochs after it; this large MLP
      fits its 500 labels, the 100 wrong ones included, to a training error <= 1% by epoch t = 23-27 (clean:
      9-10) and every one of them by epoch 500; the run goes on to 500 epochs, 18-22 times t (50-56 times t
      clean; recorded per seed), about 1.3 decades past t. The old default's ConvNet (7k parameters, about
      1 s an epoch here with BatchNorm and a checkpoint per epoch) still misfit 9% of the wrong labels
      after 100 epochs: a "medium" model in Nakkiran et al.'s sense, where no second descent is expected, and
      too slow on this CPU to run past its interpolation epoch for 10 runs.
      Described per seed as well (not a verdict): on the test error's running mean over ``smooth`` epochs,
      the first minimum (before t), the highest point after it, the lowest after that, and the end; a seed
      "falls, rises, falls again" when the peak is >= 2 points above both the first minimum and the end
      (a peak picked as a maximum is biased upward by the curve's jitter, hence the windowed verdict).

Run: python -m experiments.early_stopping  ->  experiments/results/early_stopping/
Result (default config, 5 paired seeds, the 2-core CPU shared with other jobs: load average 20-23, 553.3 s
wall, 223.5 s CPU; mean +- standard error over seeds, test error on 500 digits):
- Early stopping (``val_error``, patience 20) with 20% wrong labels halts after 26.2 +- 0.7 epochs and returns
  epoch 6.2 +- 0.7: test error 17.6 +- 0.6% against 26.1 +- 1.1% at epoch 500. Paired difference -8.6 +- 1.2
  points (95% interval [-11.9, -5.2], min_effect 1 point): reproduced. With clean labels it halts after
  49.0 +- 7.3 epochs, returns epoch 29.0 +- 7.3 at 12.0 +- 0.0% against 12.1 +- 0.2% at epoch 500:
  -0.1 +- 0.2 points ([-0.6, 0.3]): partly (the right sign, far below 1 point: without label noise the
  large MLP barely overfits). The gain (last epoch minus early-stopped) is 8.4 +- 1.1 points larger with
  noisy labels ([5.4, 11.4], min_effect 1 point): reproduced.
- Epoch-wise double descent: not reproduced. With 20% wrong labels the test error falls to its lowest
  within the first 10 epochs, climbs while the net memorizes the wrong labels (training error <= 1% from epoch t =
  26.0 +- 0.8; every wrong label fitted at epoch 500), and then keeps creeping up instead of descending:
  24.5 +- 0.7% over epochs [t, 2t], 26.0 +- 1.1% over the last 50 epochs, a paired change of +1.6 +- 0.7
  points ([-0.2, 3.4]; the claim needs <= -2). Clean labels: 11.6 +- 0.1% -> 12.0 +- 0.2%, +0.4 +- 0.2
  points ([-0.05, 0.9]): not reproduced. No seed of either set falls, rises and falls again by 2 points
  on the 10-epoch running mean (0 of 5 each). The early-stopped runs are exact prefixes of the long runs
  (training losses equal to the bit, max difference 0.0).
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import mnist_splits
from jaxnets import data, models, train

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, n_train=500, val_fraction=0.5, label_noise=(0.0, 0.2),
    noise_draw="per seed: noisy_labels(labels, label_noise, seed=s)",
    model="mlp", hidden=(512,), optimizer="adam", lr=1e-3, batch_size=50, epochs=500, patience=20,
    monitor="val_error", interpolation_error=0.01, late_epochs=50, smooth=10,
    evaluation="no BatchNorm (no running statistics); constant learning rate, as early stopping presupposes",
    # the smallest effects the claims describe (the notes give no size): 1 point = 5 of the 500 test digits
    min_effect={"gain": 0.01, "gain_noisy_over_clean": 0.01, "second_descent": 0.02},
)
# The full run: all 4,000 training digits, a wider and deeper MLP, ten times the epochs (a GPU's budget).
FULL_CONFIG = dict(CONFIG, preset="full", n_train=4000, hidden=(1024, 1024), epochs=5000, patience=100,
                   late_epochs=500, smooth=50)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, hidden=(16,), epochs=4, patience=1,
                   late_epochs=1, smooth=2, interpolation_error=0.9)


def noisy_labels(labels: np.ndarray, fraction: float, seed: int, num_classes: int = 10):
    """``labels`` with ``round(fraction * n)`` of them (chosen at random) moved to a uniformly drawn other class.

    Returns: (new labels, boolean mask of the changed examples)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    changed = np.zeros(n, bool)
    changed[rng.choice(n, round(fraction * n), replace=False)] = True
    shift = rng.integers(1, num_classes, n)  # 1 .. K-1: never the true class
    return np.where(changed, (labels + shift) % num_classes, labels).astype(labels.dtype), changed


def one_run(config: dict, noise: float, seed: int, sets: dict, model, optimizer) -> dict:
    """The long run (test error every epoch) and the early-stopped run of one seed on one training set.

    ``model`` and ``optimizer`` are the same objects for every run, so ``fit`` compiles its step once."""
    train_set, val_set, test_set = sets["train"], sets["val"], sets["test"]
    labels, changed = noisy_labels(train_set["label"], noise, seed)
    noisy_set = {"image": train_set["image"], "label": labels}
    common = {"batch_size": config["batch_size"], "optimizer": optimizer, "seed": seed, "progress": False,
              "epochs": config["epochs"]}
    start = time.perf_counter()
    final_state, long = train.fit(model, noisy_set, val_data=test_set, **common)
    seconds = time.perf_counter() - start
    _, es = train.fit(model, noisy_set, val_data=val_set, **common,
                      early_stopping=train.EarlyStopping(config["monitor"], patience=config["patience"]))
    test = np.asarray(long.val_error)
    epoch = es.best_epoch
    memorized = {}
    for name, part in (("correct_labels", ~changed), ("wrong_labels", changed)):
        if part.any():  # the final network on its own training labels: how many wrong ones it has fitted
            memorized[name] = 1.0 - train.evaluate(final_state, {k: v[part] for k, v in noisy_set.items()},
                                                   batch_size=config["batch_size"])["accuracy"]
    row = {"seed": seed, "label_noise": noise, "wrong_labels": int(changed.sum()), "seconds_long_run": seconds,
           "seconds": time.perf_counter() - start,
           "test_error": test, "train_error": np.asarray(long.train_error), "test_loss": np.asarray(long.val_loss),
           "val_error_es_run": np.asarray(es.val_error),
           "es_epoch": epoch, "es_stopped_after": len(es), "es_test_error": float(test[epoch - 1]),
           "final_test_error": float(test[-1]), "final_train_error_by_part": memorized,
           # the early-stopped run trains exactly as the long one did until it halts
           "es_prefix_max_abs_diff_train_loss": float(np.max(np.abs(np.asarray(es.train_loss)
                                                                    - np.asarray(long.train_loss)[:len(es)])))}
    row.update(shape(test, row["train_error"], config))
    print(f"noise {noise:.0%} seed {seed}: ES stops after {len(es)}, epoch {epoch}: test "
          f"{100 * row['es_test_error']:.1f}%, final {100 * row['final_test_error']:.1f}%; interpolation epoch "
          f"{row['interpolation_epoch']}, window {100 * row['peak_window_test_error']:.1f}% -> late "
          f"{100 * row['late_window_test_error']:.1f}% [{row['seconds']:.0f} s]", flush=True)
    return row


def shape(test: np.ndarray, train_error: np.ndarray, config: dict) -> dict:
    """The double-descent readings of one test-error curve (see the module docstring, claim 3).

    Windows fixed by the training curve: epochs [t, 2t] from the interpolation epoch t (first epoch with a
    training error <= ``interpolation_error``) and the last ``late_epochs`` epochs; nan when t is not
    reached or 2t runs into the late window. Descriptive points on the running mean over ``smooth`` epochs
    (epochs named by the last epoch of each window)."""
    epochs, late = len(test), config["late_epochs"]
    reached = np.flatnonzero(train_error <= config["interpolation_error"])
    t = int(reached[0]) + 1 if reached.size else None
    fits = t is not None and 2 * t <= epochs - late
    out = {"interpolation_epoch": t, "epochs_over_interpolation_epoch": epochs / t if t else None,
           "peak_window": [t, 2 * t] if fits else None,
           "peak_window_test_error": float(np.mean(test[t - 1:2 * t])) if fits else float("nan"),
           "late_window_test_error": float(np.mean(test[epochs - late:]))}
    k = config["smooth"]
    curve = np.convolve(test, np.ones(k) / k, mode="valid")
    before = max(1, min(len(curve), (t or epochs) - k + 1))  # windows that end by epoch t
    first = int(np.argmin(curve[:before]))
    peak = first + int(np.argmax(curve[first:]))
    low = peak + int(np.argmin(curve[peak:]))
    x = config["min_effect"]["second_descent"]
    out["smoothed"] = {"first_min_epoch": first + k, "first_min": float(curve[first]), "peak_epoch": peak + k,
                       "peak": float(curve[peak]), "min_after_peak_epoch": low + k,
                       "min_after_peak": float(curve[low]), "end": float(curve[-1]),
                       "falls_rises_falls": bool(curve[peak] - curve[first] >= x and curve[peak] - curve[-1] >= x)}
    return out


def claim(text: str, a: str, b: str, values_a, values_b, *, direction: str, min_effect: float, metric: str) -> dict:
    d = protocol.paired(values_a, values_b)
    return {"claim": text, "a": a, "b": b, "metric": metric, "values_a": list(values_a), "values_b": list(values_b),
            "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
            "direction": direction, "min_effect": min_effect,
            "verdict": protocol.verdict(d, direction=direction, min_effect=min_effect)}


def judge(rows: dict, config: dict) -> list[dict]:
    """The paired claims; ``rows[noise]`` holds one row per seed, in ``config["seeds"]`` order."""
    size = config["min_effect"]
    clean, noisy = (rows[n] for n in sorted(rows))
    name = {n: "clean labels" if n == 0 else f"{n:.0%} label noise" for n in rows}
    metric = "test error (500 digits)"
    claims = []
    for n, r in rows.items():
        claims.append(claim(f"early stopping ends at a lower test error than the last epoch ({name[n]})",
                            f"last epoch ({config['epochs']})", f"early-stopped epoch (patience {config['patience']})",
                            [x["final_test_error"] for x in r], [x["es_test_error"] for x in r], direction="lower",
                            min_effect=size["gain"], metric=metric))
    gain = {n: [x["final_test_error"] - x["es_test_error"] for x in r] for n, r in rows.items()}
    noisy_key = max(rows)
    claims.append(claim(f"early stopping gains more with {name[noisy_key]} than with clean labels",
                        "gain (final - early-stopped), clean", f"gain, {name[noisy_key]}", gain[min(rows)],
                        gain[noisy_key], direction="higher", min_effect=size["gain_noisy_over_clean"],
                        metric=f"{metric}, final minus early-stopped"))
    for n, r in ((noisy_key, noisy), (min(rows), clean)):
        claims.append(claim(f"epoch-wise double descent ({name[n]}): the test error descends again after the "
                            "interpolation epoch t", "mean over epochs [t, 2t]",
                            f"mean over the last {config['late_epochs']} epochs",
                            [x["peak_window_test_error"] for x in r], [x["late_window_test_error"] for x in r],
                            direction="lower", min_effect=size["second_descent"], metric=metric))
    return claims


def main(config=CONFIG, *, out=None):
    """Early stopping against the last epoch, with clean and noisy labels; the test error's shape over epochs."""
    started, cpu_started = time.perf_counter(), time.process_time()
    load_before = machine_load()
    train_set, held_out = mnist_splits(config["n_train"], seed=config["data_seed"])
    val_set, test_set = data.split(held_out, fraction=config["val_fraction"], seed=config["data_seed"])
    sets = {"train": train_set, "val": val_set, "test": test_set}
    model = models.create(config["model"], hidden=tuple(config["hidden"]))
    optimizer = train.optimizer(config["optimizer"], learning_rate=config["lr"])
    rows = {noise: [one_run(config, noise, seed, sets, model, optimizer) for seed in config["seeds"]]
            for noise in config["label_noise"]}
    claims = judge(rows, config)
    for c in claims:
        print(f"{c['verdict']:15s} {c['claim']}: {c['difference_text']}")
    summary = {}
    for noise, r in rows.items():
        keys = ["es_test_error", "final_test_error", "es_epoch", "es_stopped_after", "interpolation_epoch",
                "peak_window_test_error", "late_window_test_error", "correct_labels_fitted_error"]
        if noise > 0:
            keys.append("wrong_labels_fitted_error")
        summary[str(noise)] = {key: protocol.estimate([_value(x, key) for x in r]) for key in keys}
        summary[str(noise)]["falls_rises_falls_seeds"] = sum(x["smoothed"]["falls_rises_falls"] for x in r)
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]), "n_test": len(test_set["label"]),
               "evaluation": config["evaluation"], "summary": summary, "claims": claims,
               "max_es_prefix_abs_diff_train_loss": max(x["es_prefix_max_abs_diff_train_loss"]
                                                        for r in rows.values() for x in r),
               "machine_load_before": load_before, "machine_load_after": machine_load(),
               "cpu_time_s": time.process_time() - cpu_started,
               "runs": {str(noise): r for noise, r in rows.items()}}
    return write_results(__file__, config, results, figures={"curves": plot(rows, claims, config)}, out=out,
                         started=started)


def _value(row: dict, key: str) -> float:
    if key.endswith("_fitted_error"):  # the final network's error on its own training labels, by part
        return row["final_train_error_by_part"].get(key.replace("_fitted_error", ""), float("nan"))
    value = row[key]
    return float("nan") if value is None else float(value)


def plot(rows: dict, claims: list[dict], config: dict):
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(6 * len(rows) + 4.5, 4.6))
    top = 0.0
    for ax, (noise, r) in zip(axes, rows.items()):
        epochs = np.arange(1, config["epochs"] + 1)
        protocol.band(ax, epochs, [x["test_error"] for x in r], scale=100, color="C2", label="test error")
        protocol.band(ax, epochs, [x["train_error"] for x in r], scale=100, color="C0",
                      label="training error (labels as given)")
        ax.scatter([x["es_epoch"] for x in r], [100 * x["es_test_error"] for x in r], color="k", marker="v", zorder=3,
                   label="early-stopped epoch (per seed)")
        for x in r:
            if x["peak_window"]:
                ax.axvspan(*x["peak_window"], color="C3", alpha=0.05, lw=0)
        ax.axvspan(config["epochs"] - config["late_epochs"] + 1, config["epochs"], color="C1", alpha=0.1, lw=0,
                   label=f"last {config['late_epochs']} epochs")
        ax.set(xscale="log", xlabel="epoch", ylabel="error (%)",
               title=f"{'clean labels' if noise == 0 else f'{noise:.0%} label noise'} "
                     f"(mean +- sem, {len(r)} seeds; red: [t, 2t])")
        top = max(top, 100 * max(np.nanmax(x["test_error"]) for x in r))
    for ax in axes[:-1]:
        ax.set_ylim(0, top + 5)
    ax = axes[-1]
    gain = {n: [100 * (x["final_test_error"] - x["es_test_error"]) for x in r] for n, r in rows.items()}
    names = list(gain)
    for i in range(len(config["seeds"])):
        ax.plot(range(len(names)), [gain[n][i] for n in names], color="gray", marker="o", lw=0.8, alpha=0.7)
    means = [np.mean(gain[n]) for n in names]
    sems = [protocol.estimate(gain[n])["sem"] for n in names]
    ax.errorbar(range(len(names)), means, yerr=sems, color="k", marker="s", capsize=4, lw=2, label="mean +- sem")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xticks=range(len(names)), xticklabels=["clean" if n == 0 else f"{n:.0%} noise" for n in names],
           ylabel="final - early-stopped test error (points)", title="early stopping's gain, per seed")
    return finish_figure(fig, axes, legend={"fontsize": 7},
                         suptitle=f"MLP {tuple(config['hidden'])}, Adam {config['lr']:g} constant, "
                                  f"{config['n_train']} digits, {config['epochs']} epochs; early stopping on "
                                  f"{config['monitor']}, patience {config['patience']}")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
