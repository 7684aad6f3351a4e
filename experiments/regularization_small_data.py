"""Does regularisation lower a small CNN's validation error, and more so the fewer digits it trains on?

Claim (lecture notes, /work/shared/reference/000_3cfbcdab51860f78.txt, Concept 6.6 "How to avoid
overfitting", Definitions 6.2 and 6.9-6.14): when training loss << test loss the network overfits; weight
decay, dropout and data augmentation regularize it. Data augmentation "usually worsens the training error"
and "often, but not always, improves the test error"; dropout is turned off at test time. Overfitting is
worst with little data, so the regularisers' benefit should grow as the training set shrinks (issue 17).

Setup: ``mnist_splits(n)`` for n = 250, 1,000, 4,000 (stratified subsets of the 4,000 training digits),
validated on the same 1,000 held-out digits. ``ConvNet(widths=(8, 16, 32), norm="batch")`` from
``experiments/_nets.py`` (stem + 3 conv blocks, BatchNorm, global average pool, dense head), Adam with a
cosine-decayed rate (peak 5e-3 -> 0), batches of 50 and the SAME number of steps at every n (240: 48, 12
and 3 epochs), so the sizes differ in data, not in optimisation. Conditions (the default config runs the
first and the last; FULL_CONFIG all five):
  none          no regularization;
  weight_decay  ``train.optimizer("adam", weight_decay=5e-3)`` (torch's coupled L2 on every parameter);
  dropout       ``ConvNet(dropout=0.1)``: after every block and before the head (off at evaluation);
  augment       ``fit(augment=random_translate(max_shift=2))``: random integer shifts in [-2, 2]^2;
  all           the three together.
Protocol (experiments/_protocol.py): seeds 0-4, paired (each seed is one member of a ``fit(seeds=...)``
population per condition and n: the same initial weights and batch order in both conditions). Evaluation:
the rate is annealed to 0 AND the BatchNorm statistics are recomputed in evaluation mode over the training
set (``train.recompute_batch_stats``: dropout collects the running variance with dropout on, Li et al.'s
variance shift); the recomputed numbers are the primary ones, the running-average ones are recorded too.
Errors: the final model on the clean training set and on the validation set. Claims, per the rule
(``min_effect`` 0: the notes give no size): "all lowers the validation error" at each n (paired none - all);
"its benefit grows as n shrinks" (paired: benefit at n = 250 minus benefit at n = 4,000).

Run: python -m experiments.regularization_small_data  ->  experiments/results/regularization_small_data/
Result (default config, 5 paired seeds, a 2-core CPU shared with another job (load 3.3-3.8), 259 s wall):
validation error none / all (mean +- sem, recomputed BN): n = 250: 14.9 +- 1.2% / 12.3 +- 0.6%; n = 1,000:
8.0 +- 0.6% / 8.5 +- 0.3%; n = 4,000: 7.5 +- 0.5% / 9.4 +- 0.7%. Paired all - none: -2.6 +- 1.4 points at
n = 250 (95% interval -6.4 to +1.2: partly), +0.5 +- 0.5 at 1,000 (not reproduced), +1.9 +- 0.3 at 4,000
(interval +1.1 to +2.7: regularisation HURTS, not reproduced). The benefit (none - all) falls from
2.6 +- 1.4 points at n = 250 to -0.5 +- 0.5 at 1,000 and -1.9 +- 0.3 at 4,000; benefit at 250 minus at
4,000: 4.5 +- 1.3 points (interval 1.0 to 8.0): reproduced. Training error none / all: 0.0 +- 0.0 /
2.1 +- 0.4% at n = 250, 3.2 +- 0.3 / 5.6 +- 0.4% at 1,000, 6.6 +- 0.4 / 7.7 +- 0.5% at 4,000: with 240 steps
only the n = 250 nets fit their data; at 4,000 (3 epochs) both underfit, and regularisation then costs
accuracy. The train/validation gap at n = 250 narrows from 14.9 +- 1.2 to 10.2 +- 0.5 points. With the
running BN averages instead, "all" is further behind at 1,000 and 4,000 (10.6 and 10.5% vs 8.0 and 7.5%):
dropout's variance shift.
Details: experiments/README.md.
"""
from __future__ import annotations

import functools
import time

import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import train
from jaxnets.data import augment as aug

CONDITIONS = {  # name -> (weight decay, dropout rate, augment)
    "none": (0.0, 0.0, False),
    "weight_decay": (None, 0.0, False),  # None: the config's weight_decay
    "dropout": (0.0, None, False),       # None: the config's dropout
    "augment": (0.0, 0.0, True),
    "all": (None, None, True),
}

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, n_trains=(250, 1000, 4000), n_val=None, widths=(8, 16, 32),
    norm="batch", conditions=("none", "all"), weight_decay=5e-3, dropout=0.1, max_shift=2,
    steps=240, batch_size=50, peak_lr=5e-3, eval_batch_size=500,
    evaluation="cosine-annealed rate (to 0) AND BatchNorm statistics recomputed in evaluation mode over the "
               "training set (train.recompute_batch_stats); the recomputed numbers are the primary ones",
    min_effect=0.0,  # the notes give no size for either claim
)
FULL_CONFIG = dict(CONFIG, preset="full", n_trains=(250, 500, 1000, 2000, 4000), widths=(16, 32, 64),
                   conditions=tuple(CONDITIONS), steps=1200)
# One n (the benefit claim then compares n with itself: a smoke test of the paired path, nothing more).
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_trains=(100,), n_val=100, widths=(4, 8, 8), steps=2)


def epochs_for(n: int, config: dict) -> int:
    """Epochs that give about ``config["steps"]`` steps at ``n`` training digits (equal steps per n)."""
    return max(1, round(config["steps"] / (n // config["batch_size"])))


def train_condition(config: dict, condition: str, train_set: dict, val_set: dict) -> list[dict]:
    """Train one condition with every seed as one population (seed s: the same initial weights and batch
    order in every condition); clean train / validation error and loss per seed, with recomputed BatchNorm
    statistics (primary) and with the running averages."""
    wd, rate, augmented = CONDITIONS[condition]
    wd = config["weight_decay"] if wd is None else wd
    rate = config["dropout"] if rate is None else rate
    n = len(train_set["label"])
    epochs = epochs_for(n, config)
    steps = epochs * (n // config["batch_size"])
    optimizer = train.optimizer("adam", learning_rate=train.schedules.cosine(config["peak_lr"], steps),
                                weight_decay=wd)
    model = ConvNet(widths=tuple(config["widths"]), norm=config["norm"], dropout=rate)
    # One augment object per max_shift, so that every augmented run reuses the same compiled step.
    augment = _translate(config["max_shift"]) if augmented else None
    start = time.perf_counter()
    stacked, history = train.fit(model, train_set, epochs=epochs, batch_size=config["batch_size"],
                                 optimizer=optimizer, seeds=list(config["seeds"]), augment=augment,
                                 progress=False)
    bs, rows = config["eval_batch_size"], []
    for r, run_ in enumerate(history.runs):
        state = train.unstack(stacked, r)
        clean, val = train.evaluate(state, train_set, batch_size=bs), train.evaluate(state, val_set, batch_size=bs)
        # BatchNorm's running variance was accumulated with dropout on; recomputed in evaluation mode
        # (dropout off) over the training images, it matches what the layers see at test time.
        exact = train.recompute_batch_stats(state, train_set, batch_size=bs)
        clean_x, val_x = train.evaluate(exact, train_set, batch_size=bs), train.evaluate(exact, val_set, batch_size=bs)
        rows.append({"condition": condition, "seed": run_["seed"], "n_train": n, "epochs": epochs, "steps": steps,
                     "train_error": 1 - clean_x["accuracy"], "train_loss": clean_x["loss"],
                     "val_error": 1 - val_x["accuracy"], "val_loss": val_x["loss"],
                     "gap_error": clean_x["accuracy"] - val_x["accuracy"],
                     "running_bn": {"train_error": 1 - clean["accuracy"], "train_loss": clean["loss"],
                                    "val_error": 1 - val["accuracy"], "val_loss": val["loss"]},
                     "last_epoch_train_loss": float(history.train_loss[-1][r])})
    seconds = time.perf_counter() - start
    print(f"n {n:5d} {condition:13s} [{epochs} ep, {steps} steps, {seconds:.0f} s]: val err "
          + " ".join(f"{x['val_error']:.3f}" for x in rows) + " | train err "
          + " ".join(f"{x['train_error']:.3f}" for x in rows), flush=True)
    for x in rows:
        x["seconds_condition"] = seconds
    return rows


@functools.lru_cache(maxsize=None)
def _translate(max_shift: int):
    return functools.partial(aug.random_translate, max_shift=max_shift)


def per_seed(rows: list[dict], n: int, condition: str, key: str, seeds) -> list[float]:
    """``key`` of (n, condition) in the order of ``seeds`` (paired across settings)."""
    by_seed = {r["seed"]: r for r in rows if r["n_train"] == n and r["condition"] == condition}
    value = (lambda r: r["running_bn"][key.split(".", 1)[1]]) if key.startswith("running_bn.") else \
        (lambda r: r[key])
    return [value(by_seed[s]) for s in seeds]


def judge(rows: list[dict], config: dict) -> tuple[dict, dict]:
    """Per n and condition: mean +- sem of every number; the claims with their paired differences."""
    seeds, conds, ns = config["seeds"], config["conditions"], config["n_trains"]
    keys = ("train_error", "val_error", "gap_error", "train_loss", "val_loss", "running_bn.val_error")
    summary = {str(n): {c: {k: protocol.estimate(per_seed(rows, n, c, k, seeds)) for k in keys} for c in conds}
               for n in ns}
    claims, m = {}, config["min_effect"]
    base = conds[0]
    for c in conds[1:]:
        for n in ns:
            for metric, key in (("recomputed BN", "val_error"), ("running BN", "running_bn.val_error")):
                d = protocol.paired(per_seed(rows, n, base, key, seeds), per_seed(rows, n, c, key, seeds))
                tag = "" if key == "val_error" else "_running_bn"
                claims[f"{c}_lowers_val_error_n{n}{tag}"] = {
                    "claim": f"{c} lowers the validation error ({metric}) at n = {n}", "a": base, "b": c,
                    "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
                    "min_effect": m, "verdict": protocol.verdict(d, direction="lower", min_effect=m)}
        benefit = {n: np.subtract(per_seed(rows, n, base, "val_error", seeds),
                                  per_seed(rows, n, c, "val_error", seeds)) for n in ns}
        d = protocol.paired(benefit[max(ns)], benefit[min(ns)])
        claims[f"{c}_benefit_grows_as_n_shrinks"] = {
            "claim": f"the benefit of {c} (val error of {base} minus {c}, recomputed BN) is larger at "
                     f"n = {min(ns)} than at n = {max(ns)}",
            "benefit": {str(n): protocol.estimate(b) for n, b in benefit.items()},
            "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
            "min_effect": m, "verdict": protocol.verdict(d, direction="higher", min_effect=m)}
    return summary, claims


def main(config=CONFIG, *, out=None):
    """Validation error of a small CNN with and without regularisation, over training-set sizes."""
    started, cpu_started = time.perf_counter(), time.process_time()
    load_start = machine_load()
    rows = []
    for n in config["n_trains"]:
        train_set, val_set = mnist_splits(n, config["n_val"], seed=0)
        for c in config["conditions"]:
            rows += train_condition(config, c, train_set, val_set)
    summary, claims = judge(rows, config)
    for name, c in claims.items():
        print(f"{name}: {c['difference_text']} -> {c['verdict']}")
    results = {"n_val": len(val_set["label"]), "runs": rows, "summary": summary, "claims": claims,
               "machine_load_start": load_start, "machine_load_end": machine_load(),
               "cpu_time_s": time.process_time() - cpu_started}
    figures = {"errors": plot_errors(rows, claims, config)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def plot_errors(rows: list[dict], claims: dict, config: dict):
    ns, seeds, conds = list(config["n_trains"]), config["seeds"], config["conditions"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, c in enumerate(conds):
        for key, style in (("val_error", "-"), ("train_error", ":")):
            values = np.array([per_seed(rows, n, c, key, seeds) for n in ns]).T
            protocol.band(axes[0], ns, values, scale=100, color=f"C{i}", ls=style, marker="o",
                          label=f"{c}, {key.split('_')[0]}")
    axes[0].set(xscale="log", xlabel="training digits n", ylabel="error (%), recomputed BN", ylim=(0, None),
                title=f"{len(seeds)} paired seeds, {config['steps']} steps per n (mean +- sem)")
    axes[0].set_xticks(ns, [str(n) for n in ns])
    for i, c in enumerate(conds[1:], start=1):
        benefit = np.array([np.subtract(per_seed(rows, n, conds[0], "val_error", seeds),
                                        per_seed(rows, n, c, "val_error", seeds)) for n in ns]).T
        for row in benefit:
            axes[1].plot(ns, 100 * row, color=f"C{i}", alpha=0.3, lw=0.8)
        protocol.band(axes[1], ns, benefit, scale=100, color=f"C{i}", marker="o", label=f"{conds[0]} - {c}")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set(xscale="log", xlabel="training digits n", ylabel="validation error benefit (points)",
                title="benefit of regularisation per seed (thin) and mean +- sem")
    axes[1].set_xticks(ns, [str(n) for n in ns])
    for ax in axes:
        ax.minorticks_off()  # the log axis' minor labels (3x10^2 ...) would crowd the three n
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
