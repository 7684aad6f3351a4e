"""Dropout, batch norm, both, neither: which generalizes best, and does the pair really hurt?

Claim (course notes, 000_3cfbcdab51860f78.txt, Concept 6.51, and 001_f4e8d95f5b8d410b.txt): "BN seems to also
act as a regularizer, and for some reason subsumes [the] effect [of] Dropout. (Using dropout together with BN
seems to worsen performance.)" The reason given by Li, Chen, Hu & Yang (CVPR 2019), cited there, is the
VARIANCE SHIFT: a dropout layer in front of a BN layer scales the variance BN sees in training (inverted
dropout keeps the mean but multiplies the second moment of each unit by 1 / (1 - p)), while at test time,
without dropout, the inputs have a smaller variance than the running statistics BN normalises with.

Setup: ``experiments._nets.ConvNet`` (widths (16, 32, 64), one plain conv block per stage, ReLU, He-normal
init: with PyTorch's default init the no-BN net fit too slowly for this budget), four variants that differ
only in ``norm`` (None / "batch") and ``dropout`` (0 / p). Dropout sits after every block's activation and
before the head, so the BNs of the second and third stages (the 3rd and 4th BN layers) have a dropout in
front of them (Li et al.'s harmful arrangement) and the first two (stem, first stage) do not: a built-in
control. A small stratified training subset of the MNIST sample (so that regularization matters), the 1,000
held-out digits for validation, Adam, two seeds (the same for every variant: same data order, and the same
initial weights where the layers coincide).

Measured per variant and seed: training loss and error per epoch (train mode: with dropout, as the batches
ran), the final training error in evaluation mode (how well the training set is fit), the validation error
per epoch (evaluation mode: BN's running statistics, no dropout), and for the BN variants (i) the
validation error after replacing the running statistics by population statistics recomputed in evaluation
mode (``train.recompute_batch_stats``: no dropout, so no variance shift; the direct fix for it), and
(ii) the variance shift itself, ``running var / recomputed var`` per BN layer (mean over channels).

Run: python -m experiments.dropout_and_batchnorm  ->  experiments/results/dropout_and_batchnorm/
Result (default config: 500 training digits, 24 epochs = 240 Adam steps, dropout 0.3, seeds 0 and 1; 183 s
wall on a quiet 2-core CPU): final validation error (mean of 2 seeds) neither 10.8%, dropout 9.1%, BN 7.75%,
BN + dropout 24.75% (11.0% and 38.5%: one seed collapses). The pair also fits the training set worst in
evaluation mode (19.0% training error vs 0.0% for BN alone). The variance shift is there, exactly where
dropout feeds a BN: running var / evaluation-mode var = 1.69 and 1.74 for the two BNs behind a dropout, 0.99
and 0.98 for the two without one (BN alone: 1.00, 1.01, 1.00, 1.00). Recomputing the BN statistics without
dropout removes the damage: BN + dropout 6.55% (6.6%, 6.5%), close to BN alone recomputed (6.25%: 6.1%, 6.4%;
a 0.3-point gap, small next to the seed spreads here). Reproduced, with the mechanism: the pair is worse
almost only through its test-time statistics.
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, init, train

CONFIG = dict(
    preset="default", dataset="mnist_sample", data_root="data", seeds=(0, 1), n_train=500, n_val=1000,
    widths=(16, 32, 64), blocks_per_stage=1, kernel_init="he_normal", dropout=0.3,
    variants={"neither": (None, False), "dropout": (None, True), "batchnorm": ("batch", False),
              "both": ("batch", True)},  # name: (norm, dropout on)
    optimizer="adam", lr=3e-3, epochs=24, batch_size=50,
)
# --full: CIFAR-10 (place it under data_root/cifar10/, see jaxnets.data.load_cifar10), all 50,000 training
# images, the 10,000 test images as validation, a wider and deeper net, three seeds.
FULL_CONFIG = dict(CONFIG, preset="full", dataset="cifar10", seeds=(0, 1, 2), n_train=None, n_val=None,
                   widths=(64, 128, 256), blocks_per_stage=2, dropout=0.3, epochs=40, batch_size=128)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0,), n_train=100, n_val=50, widths=(4, 8, 8), epochs=1,
                   batch_size=25, variants={"dropout": (None, True), "both": ("batch", True)})


def load(config: dict):
    if config["dataset"] == "cifar10":  # raises FileNotFoundError (saying where to put it) when absent
        return data.load_cifar10(config["data_root"])
    return mnist_splits(config["n_train"], config["n_val"], seed=0)


def variance_shift(state: train.TrainState, recomputed: train.TrainState) -> list[float]:
    """Per BN layer (in parameter order): running variance / evaluation-mode variance, mean over channels."""
    names = sorted(state.batch_stats, key=lambda n: int(n.split("_")[-1]))
    return [float(np.mean(np.asarray(state.batch_stats[n]["var"]) / np.asarray(recomputed.batch_stats[n]["var"])))
            for n in names]


def train_one(name: str, seed: int, config: dict, train_set: dict, val_set: dict) -> dict:
    norm, use_dropout = config["variants"][name]
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"], norm=norm,
                    dropout=config["dropout"] if use_dropout else 0.0, kernel_init=getattr(init, config["kernel_init"])())
    started = time.perf_counter()
    state, history = train.fit(model, train_set, val_data=val_set, epochs=config["epochs"],
                               batch_size=config["batch_size"], optimizer=train.optimizer(config["optimizer"],
                               learning_rate=config["lr"]), seed=seed, progress=False)
    row = {"train_loss": history.train_loss, "train_error": history.train_error, "val_loss": history.val_loss,
           "val_error": history.val_error, "train_error_eval_mode": 1 - train.evaluate(state, train_set)["accuracy"]}
    if norm == "batch":
        recomputed = train.recompute_batch_stats(state, train_set)
        row["val_error_recomputed_stats"] = 1 - train.evaluate(recomputed, val_set)["accuracy"]
        row["variance_shift"] = variance_shift(state, recomputed)
    row["seconds"] = time.perf_counter() - started
    print(f"{name:9s} seed {seed}: train err {history.train_error[-1]:.3f} (eval mode "
          f"{row['train_error_eval_mode']:.3f})  val err {history.val_error[-1]:.3f} (min "
          f"{min(history.val_error):.3f}) recomputed {row.get('val_error_recomputed_stats', float('nan')):.3f}  "
          f"var shift {np.round(row.get('variance_shift', []), 2)} [{row['seconds']:.0f} s]", flush=True)
    return row


def summarize(rows: list[dict]) -> dict:
    """Mean and per-seed values of the final numbers (the last epoch's, not the best one's)."""
    final = {"train_error": [r["train_error"][-1] for r in rows], "val_error": [r["val_error"][-1] for r in rows],
             "train_error_eval_mode": [r["train_error_eval_mode"] for r in rows],
             "min_val_error": [min(r["val_error"]) for r in rows]}
    if "val_error_recomputed_stats" in rows[0]:
        final["val_error_recomputed_stats"] = [r["val_error_recomputed_stats"] for r in rows]
        final["variance_shift"] = np.mean([r["variance_shift"] for r in rows], axis=0).tolist()
    return {key: {"mean": float(np.mean(v)), "per_seed": v} if key != "variance_shift" else v
            for key, v in final.items()}


def main(config=CONFIG, *, out=None):
    """Train the four variants for every seed; train and validation error."""
    started = time.perf_counter()
    train_set, val_set = load(config)
    runs = {name: [train_one(name, seed, config, train_set, val_set) for seed in config["seeds"]]
            for name in config["variants"]}
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]),
               "summary": {name: summarize(rows) for name, rows in runs.items()}, "runs": runs}
    for name, s in results["summary"].items():
        print(f"{name:9s} val err {s['val_error']['mean']:.4f}  train err (eval) {s['train_error_eval_mode']['mean']:.4f}")
    return write_results(__file__, config, results, figures={"dropout_and_batchnorm": plot(runs, config)},
                         out=out, started=started)


def plot(runs: dict, config: dict):
    fig, (ax_train, ax_val, ax_bar) = plt.subplots(1, 3, figsize=(16, 4.8))
    for i, (name, rows) in enumerate(runs.items()):
        epochs = np.arange(1, config["epochs"] + 1)
        for ax, key in ((ax_train, "train_error"), (ax_val, "val_error")):
            for r in rows:
                ax.plot(epochs, r[key], color=f"C{i}", alpha=0.25, lw=1)
            ax.plot(epochs, np.mean([r[key] for r in rows], axis=0), color=f"C{i}", lw=2, label=name)
    ax_train.set(yscale="log", xlabel="epoch", ylabel="training error (train mode, as the batches ran)",
                 title="training error (thin: seeds, thick: mean)")
    ax_val.set(yscale="log", xlabel="epoch", ylabel="validation error (eval mode, running BN stats)",
               title=f"validation error ({len(config['seeds'])} seeds)")
    names = list(runs)
    final = [np.mean([r["val_error"][-1] for r in runs[n]]) for n in names]
    recomputed = [np.mean([r.get("val_error_recomputed_stats", np.nan) for r in runs[n]]) for n in names]
    x = np.arange(len(names))
    ax_bar.bar(x - 0.2, final, 0.4, label="running BN statistics (default)")
    ax_bar.bar(x + 0.2, recomputed, 0.4, label="BN statistics recomputed without dropout")
    ax_bar.set(xticks=x, xticklabels=names, ylabel="final validation error (mean over seeds)",
               title=f"after {config['epochs']} epochs (dropout p = {config['dropout']})")
    return finish_figure(fig, (ax_train, ax_val, ax_bar), legend={"fontsize": 8})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
