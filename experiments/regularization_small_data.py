"""Does regularisation lower a small CNN's validation error, and more so the fewer digits it trains on?

(docstring to be written after the run)
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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
