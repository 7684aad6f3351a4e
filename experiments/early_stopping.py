"""Where would early stopping halt a long run, and what does it gain or lose? With 20% label noise, does the
validation error descend twice over the epochs?

Claims (lecture notes, /work/shared/reference/000_3cfbcdab51860f78.txt, Definitions 6.16 and 6.17):
"SGD fits data, so too many iterations lead to overfitting", hence stop early; but "an epochwise double
descent has been observed" (Nakkiran et al., ICLR 2020, with label noise), "so perhaps one should stop SGD
early or very late".

Setup: ``mnist_splits(n_train=500)`` (50 digits per class); the 1,000 held-out digits split (stratified)
into 500 for validation (what early stopping watches) and 500 for test (what the verdict is read from, so
selecting an epoch on the validation set does not flatter it). Training labels: with ``label_noise`` = 20%
of them replaced by a uniformly drawn OTHER class (exactly 100 wrong labels; fixed ``noise_seed``);
``--full`` adds a run on the clean labels (``label_noise`` 0). A small ``ConvNet(widths=(8, 16, 32), norm="batch")`` (7k
parameters, ``experiments/_nets.py``), Adam at a constant rate 1e-3, batches of 50, ``epochs`` epochs.
For each training set, with ``train.fit``:
  1. one long run of ``epochs`` epochs, a checkpoint every epoch (all kept), and an ``EarlyStopping``
     whose patience is longer than the run (it never halts; ``fit`` then returns the best epoch in
     hindsight, the lowest validation error); the last checkpoint is the final epoch;
  2. every epoch's checkpoint restored and evaluated on the test set and on the training set (the
     correctly and the wrongly labelled examples apart: how many wrong labels the net has memorized);
  3. two early-stopped runs, ``EarlyStopping("val_error", patience)`` and the library's default monitor
     ``EarlyStopping("val_loss", patience)``: ``fit`` halts after ``patience`` epochs without improvement
     and returns the best epoch's state. Same seed, so each is a prefix of run 1 (checked).
(Resuming run 1 from an early-stopped run's checkpoints, to avoid training those epochs twice, does not
work: ``fit`` restores ``History.stopped_early = True`` and stops again after one epoch.)

Run: python -m experiments.early_stopping  ->  experiments/results/early_stopping/
Result (default config, 20% wrong labels, a quiet 2-core CPU, 161 s): early stopping reproduced, no epoch-wise
double descent in 100 epochs. The validation / test error falls to 26.2% / 24.6% at epoch 29 and climbs
back to 45.6% / 42.4% at epoch 100 while the net memorizes the wrong labels (training error on them 83% at
epoch 29, 9% at epoch 100; on the correct ones 8.75% -> 1.75%). ``EarlyStopping("val_error", patience=10)``
halts after 39 epochs and returns epoch 29: test error 24.6%, the same epoch as the best validation epoch
in hindsight and as the best test epoch (an oracle), and 17.8 points below the final epoch, for 39% of the
training. The default monitor, ``val_loss``, halts after 57 epochs and returns epoch 47 (test 28.6%). The
5-epoch mean of the test error has its first minimum at 28.8% (epoch 32), peaks at 42.8% (epoch 78), dips to
36.9% (epoch 82) while most wrong labels are memorized, then rises again (40.6% at epoch 89) and ends at
40.2%: the dip does not last and never reaches the first minimum. Both early-stopped runs are exact prefixes
of the long run. Details: experiments/README.md.
"""
from __future__ import annotations

import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

from experiments._common import run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, train

CONFIG = dict(
    preset="default", seed=0, n_train=500, val_fraction=0.5, label_noise=(0.2,), noise_seed=0,
    widths=(8, 16, 32), norm="batch", lr=1e-3, batch_size=50, epochs=100, patience=10, eval_batch_size=500,
    smooth=5,  # epochs in the running mean used to describe the curves' shape (second_descent)
)
# The full run adds the clean-label contrast (the default has it only in the notes: it doubles the time).
FULL_CONFIG = dict(CONFIG, preset="full", label_noise=(0.0, 0.2), n_train=4000, widths=(16, 32, 64), epochs=1000,
                   patience=20)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=100, label_noise=(0.2,), widths=(4, 4, 4), epochs=3,
                   patience=1, smooth=2)


def noisy_labels(labels: np.ndarray, fraction: float, seed: int, num_classes: int = 10):
    """``labels`` with ``round(fraction * n)`` of them (chosen at random) moved to a uniformly drawn other class.

    Returns: (new labels, boolean mask of the changed examples)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    changed = np.zeros(n, bool)
    changed[rng.choice(n, round(fraction * n), replace=False)] = True
    shift = rng.integers(1, num_classes, n)  # 1 .. K-1: never the true class
    return np.where(changed, (labels + shift) % num_classes, labels).astype(labels.dtype), changed


def error(state, arrays: dict, batch_size: int) -> tuple[float, float]:
    """(error, mean loss) of ``state`` on ``arrays`` in evaluation mode; (None, None) for an empty set (the
    mislabelled part of a clean training set)."""
    if len(arrays["label"]) == 0:
        return None, None
    result = train.evaluate(state, arrays, batch_size=min(batch_size, len(arrays["label"])))
    return 1.0 - result["accuracy"], result["loss"]


def one_training_set(config: dict, noise: float, train_set: dict, val_set: dict, test_set: dict,
                     folder: str) -> dict:
    labels, changed = noisy_labels(train_set["label"], noise, config["noise_seed"])
    noisy_set = {"image": train_set["image"], "label": labels}
    parts = {"train_clean_part": {k: v[~changed] for k, v in noisy_set.items()},
             "train_noisy_part": {k: v[changed] for k, v in noisy_set.items()}}
    model = ConvNet(widths=tuple(config["widths"]), norm=config["norm"])
    optimizer = train.optimizer("adam", learning_rate=config["lr"])
    common = dict(val_data=val_set, batch_size=config["batch_size"], optimizer=optimizer, seed=config["seed"],
                  progress=False)
    start = time.perf_counter()
    # 1. the long run, a checkpoint every epoch, all kept; a patience longer than the run never stops it, and
    #    fit returns the best epoch in hindsight (lowest validation error).
    never = train.EarlyStopping("val_error", patience=config["epochs"] + 1)
    best_state, history = train.fit(model, noisy_set, epochs=config["epochs"], early_stopping=never,
                                    checkpoint_dir=folder, keep=config["epochs"], **common)
    seconds = time.perf_counter() - start
    # 2. every epoch's checkpoint on the test and training sets.
    checkpoints = train.Checkpoints(folder, keep=config["epochs"])
    curves = {name: [] for name in ("test_error", "val_error_restored", "train_clean_part_error",
                                    "train_noisy_part_error")}
    for epoch in checkpoints.epochs():
        state, _ = checkpoints.restore(best_state, epoch)
        curves["test_error"].append(error(state, test_set, config["eval_batch_size"])[0])
        curves["val_error_restored"].append(error(state, val_set, config["eval_batch_size"])[0])
        for part in parts:
            curves[f"{part}_error"].append(error(state, parts[part], config["eval_batch_size"])[0])
        if epoch == len(history):
            final_state = state
    checkpoints.close()
    # 3. early stopping as a user would run it (same seed: the same trajectory until it halts), on the
    #    validation error and on the library's default monitor, the validation loss.
    es = {}
    for monitor in ("val_error", "val_loss"):
        es[monitor] = train.fit(model, noisy_set, epochs=config["epochs"], **common,
                                early_stopping=train.EarlyStopping(monitor, patience=config["patience"]))
    (es_state, es_history), (loss_state, loss_history) = es["val_error"], es["val_loss"]
    val = np.asarray(history.val_error)
    test = np.asarray(curves["test_error"])
    points = {
        "early_stopping_val_error": {"stopped_after": len(es_history), "epoch": es_history.best_epoch,
                                     "state": es_state},
        "early_stopping_val_loss": {"stopped_after": len(loss_history), "epoch": loss_history.best_epoch,
                                    "state": loss_state},
        "best_val_in_hindsight": {"epoch": history.best_epoch, "state": best_state},
        "final": {"epoch": len(history), "state": final_state},
    }
    for point in points.values():
        state = point.pop("state")
        point["test_error"], point["test_loss"] = error(state, test_set, config["eval_batch_size"])
        point["val_error"] = error(state, val_set, config["eval_batch_size"])[0]
    points["best_test_oracle"] = {"epoch": int(np.argmin(test)) + 1, "test_error": float(test.min())}
    row = {
        "label_noise": noise, "wrong_labels": int(changed.sum()), "seconds": seconds,
        "history": history.to_dict(), "curves": curves, "points": points,
        # determinism checks: the early-stopped runs are prefixes of the long one, and the restored
        # checkpoints reproduce the logged validation errors.
        "prefix_max_abs_diff_val_error": float(np.max(np.abs(np.asarray(es_history.val_error)
                                                             - val[:len(es_history)]))),
        "prefix_max_abs_diff_val_error_val_loss_run": float(np.max(np.abs(np.asarray(loss_history.val_error)
                                                                - val[:len(loss_history)]))),
        "restored_max_abs_diff_val_error": float(np.max(np.abs(np.asarray(curves["val_error_restored"]) - val))),
        "second_descent": second_descent(val, test, config["smooth"]),
    }
    p = points
    print(f"noise {noise:.0%}: ES(val_error) stopped after {p['early_stopping_val_error']['stopped_after']} "
          f"(best {p['early_stopping_val_error']['epoch']}) test {p['early_stopping_val_error']['test_error']:.3f}; "
          f"ES(val_loss) after {p['early_stopping_val_loss']['stopped_after']} test "
          f"{p['early_stopping_val_loss']['test_error']:.3f}; best val epoch {p['best_val_in_hindsight']['epoch']} "
          f"test {p['best_val_in_hindsight']['test_error']:.3f}; final test {p['final']['test_error']:.3f}; oracle "
          f"{p['best_test_oracle']['test_error']:.3f} [long run {seconds:.0f} s, "
          f"all {time.perf_counter() - start:.0f} s]",
          flush=True)
    return row


def second_descent(val: np.ndarray, test: np.ndarray, smooth: int) -> dict:
    """The shape of each curve, on its running mean over ``smooth`` epochs (a constant-rate run jumps by
    several points from one epoch to the next): the first minimum (the lowest point of the first half of
    the run), the highest point after it, the lowest point after that, and the end.

    A second descent shows as ``min_after_peak`` clearly below ``peak`` (and, in Nakkiran et al.'s
    strong form, below ``first_min``). Epochs are those at the end of each averaging window."""
    out = {}
    for name, raw in (("val", val), ("test", test)):
        curve = np.convolve(raw, np.ones(smooth) / smooth, mode="valid")
        half = max(1, len(curve) // 2)
        first = int(np.argmin(curve[:half]))
        peak = first + int(np.argmax(curve[first:]))
        last = peak + int(np.argmin(curve[peak:]))
        at = lambda i: i + smooth  # noqa: E731  (1-based last epoch of window i)
        out[name] = {"first_min_epoch": at(first), "first_min": float(curve[first]), "peak_epoch": at(peak),
                     "peak": float(curve[peak]), "min_after_peak_epoch": at(last),
                     "min_after_peak": float(curve[last]), "final": float(curve[-1])}
    return out


def main(config=CONFIG, *, out=None):
    """Validation/test error over a long run, with and without label noise; early stopping's choice."""
    started, cpu_started = time.perf_counter(), time.process_time()
    train_set, held_out = mnist_splits(config["n_train"], seed=config["seed"])
    val_set, test_set = data.split(held_out, fraction=config["val_fraction"], seed=config["seed"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, noise in enumerate(config["label_noise"]):
            rows.append(one_training_set(config, noise, train_set, val_set, test_set, os.path.join(tmp, str(i))))
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]), "n_test": len(test_set["label"]),
               "runs": rows, "cpu_time_s": time.process_time() - cpu_started}
    return write_results(__file__, config, results, figures={"curves": plot(rows, config)}, out=out,
                         started=started)


def plot(rows: list[dict], config: dict):
    fig, axes = plt.subplots(1, len(rows), figsize=(6.5 * len(rows), 4.8), squeeze=False)
    for ax, r in zip(axes[0], rows):
        h, c, p = r["history"], r["curves"], r["points"]
        epochs = np.arange(1, len(h["val_error"]) + 1)
        k = config["smooth"]
        for values, color, label in ((h["val_error"], "C3", "validation (500)"), (c["test_error"], "C2", "test (500)")):
            ax.plot(epochs, 100 * np.asarray(values), color=color, lw=0.7, alpha=0.6, label=label)
            ax.plot(epochs[k - 1:], 100 * np.convolve(values, np.ones(k) / k, mode="valid"), color=color, lw=2,
                    label=f"{label}, mean of {k} epochs")
        ax.plot(epochs, 100 * np.asarray(c["train_clean_part_error"]), color="C0", label="train, correct labels")
        if r["wrong_labels"]:
            ax.plot(epochs, 100 * np.asarray(c["train_noisy_part_error"]), color="C1",
                    label="train, wrong labels (100 - % memorized)")
        for name, style in (("early_stopping_val_error", ":"), ("early_stopping_val_loss", "-."),
                            ("best_val_in_hindsight", "--")):
            ax.axvline(p[name]["epoch"], color="k", ls=style, lw=1,
                       label=f"{name} (epoch {p[name]['epoch']})")
        for name in ("early_stopping_val_error", "early_stopping_val_loss"):
            ax.axvline(p[name]["stopped_after"], color="gray", ls=":" if name.endswith("error") else "-.", lw=1)
        ax.set(xlabel="epoch", ylabel="error (%)", ylim=(0, 100),
               title=f"{r['label_noise']:.0%} label noise ({r['wrong_labels']} wrong of {config['n_train']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"ConvNet{tuple(config['widths'])}, Adam {config['lr']:g} constant, {config['epochs']} epochs\n"
                 f"black: epoch chosen, gray: where early stopping halted (patience {config['patience']})", fontsize=10)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
