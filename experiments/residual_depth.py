"""Do deeper plain CNNs train worse than shallower ones, and do residual connections remove the degradation?

Claim (course notes, 001_f4e8d95f5b8d410b.txt, "Residual Network (ResNet)"; He, Zhang, Ren & Sun, CVPR 2016):
"more layers is not always better"; the deeper plain network has the higher TRAINING error ("not due to
overfitting"), so deeper networks are harder to optimize; a residual block, for which [all weights = 0]
means [block = identity], lets the deeper network do at least as well as the shallower one. Goyal et al.
(2017): starting every residual branch at zero (``zero_init_residual``: the last BN scale of each branch = 0)
makes each block the identity at initialization.

Setup: ``experiments._nets.ConvNet`` with BatchNorm and ReLU (PyTorch's default init), three stages, compared
at EQUAL numbers of weight layers, ``depth = 2 + (convs per stage) x 3`` (stem, convs, dense head; as He et
al. count, the two 1 x 1 projection shortcuts of the residual nets are not counted): a plain net with
``(depth - 2) / 3`` one-conv blocks per stage against a residual net with ``(depth - 2) / 6`` two-conv
blocks per stage, with ``zero_init_residual`` off and on. Same seed, data order, optimizer (SGD + momentum)
and learning rate for all; a stratified subset of the MNIST sample, a few epochs.

Measured per depth and variant: training loss and error per epoch (train mode, mean over the epoch's
batches as they ran: the quantity He et al. plot), validation loss and error per epoch (eval mode).

Run: python -m experiments.residual_depth  ->  experiments/results/residual_depth/
Result (default config: widths 8/16/32, 1,000 training digits, SGD momentum 0.9, lr 0.05, batch 50, 5 epochs =
100 steps, one seed; 163 s wall on a quiet 2-core CPU): final-epoch training loss at 8 / 20 / 32 weight
layers: plain 0.235 / 0.306 / 0.937 (training error 5.3% / 8.7% / 33.3%), residual 0.239 / 0.213 / 0.216
(6.1% / 6.9% / 6.9%), residual with zero_init_residual 1.513 / 1.060 / 0.855 (49.7% / 37.8% / 28.6%). The
degradation reproduces in the training error (the deeper plain net fits worse: it is not overfitting) and
the residual nets do not degrade (32 layers end below 8 in loss, 0.216 vs 0.239, and 0.8 points above in
error, 6.9% vs 6.1%; 20 and 32 are nearly equal). zero_init_residual does not degrade with depth either
(it improves), but in 100 steps it is far behind the standard init at every depth: its blocks start as
identities and their branches only begin to learn as the zero BN scales grow. Early training only: He et
al.'s curves run to convergence. Details: experiments/README.md.
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from experiments._common import run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, train

CONFIG = dict(
    preset="default", dataset="mnist_sample", data_root="data", seed=0, n_train=1000, n_val=1000,
    widths=(8, 16, 32), depths=(8, 20, 32),
    variants=("plain", "residual", "residual_zero_init"),
    optimizer="sgd", lr=0.05, momentum=0.9, epochs=5, batch_size=50,
)
# --full: He et al.'s CIFAR-10 setting (widths 16/32/64, depths 6n + 2): place CIFAR-10 under
# data_root/cifar10/ (see jaxnets.data.load_cifar10); the 10,000 test images serve as validation.
FULL_CONFIG = dict(CONFIG, preset="full", dataset="cifar10", n_train=None, n_val=None, widths=(16, 32, 64),
                   depths=(20, 32, 44, 56), lr=0.1, epochs=40, batch_size=128)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=100, n_val=50, widths=(4, 4, 8), depths=(8,),
                   variants=("plain", "residual_zero_init"), epochs=1, batch_size=25)


def load(config: dict):
    if config["dataset"] == "cifar10":  # raises FileNotFoundError (saying where to put it) when absent
        return data.load_cifar10(config["data_root"])
    return mnist_splits(config["n_train"], config["n_val"], seed=0)


def build(variant: str, depth: int, widths) -> ConvNet:
    """The ConvNet with ``depth`` weight layers: plain (one conv per block) or residual (two per block)."""
    convs_per_stage, remainder = divmod(depth - 2, len(widths))
    residual = variant != "plain"
    if remainder or (residual and convs_per_stage % 2):
        raise ValueError(f"residual_depth: depth - 2 must be a multiple of {2 * len(widths)} (so plain and "
                         f"residual nets have equal conv counts), got depth {depth}.")
    model = ConvNet(widths=tuple(widths), norm="batch", residual=residual,
                    blocks_per_stage=convs_per_stage // 2 if residual else convs_per_stage,
                    zero_init_residual=variant == "residual_zero_init")
    assert model.depth == depth  # an internal invariant of this script, not a check on user input
    return model


def main(config=CONFIG, *, out=None):
    """Train plain and residual nets of each depth; training and validation curves."""
    started = time.perf_counter()
    train_set, val_set = load(config)
    tx = train.optimizer(config["optimizer"], learning_rate=config["lr"], momentum=config["momentum"])
    runs = {variant: {} for variant in config["variants"]}
    for depth in config["depths"]:
        for variant in config["variants"]:
            t = time.perf_counter()
            _, h = train.fit(build(variant, depth, config["widths"]), train_set, val_data=val_set,
                             epochs=config["epochs"], batch_size=config["batch_size"], optimizer=tx,
                             seed=config["seed"], progress=False)
            runs[variant][depth] = {"train_loss": h.train_loss, "train_error": h.train_error,
                                    "val_loss": h.val_loss, "val_error": h.val_error,
                                    "seconds": time.perf_counter() - t}
            print(f"depth {depth:3d} {variant:19s} train loss {' '.join(f'{v:.3f}' for v in h.train_loss)}  "
                  f"train err {h.train_error[-1]:.3f}  val err {h.val_error[-1]:.3f} [{time.perf_counter() - t:.0f} s]",
                  flush=True)
    final = {variant: {key: {str(d): r[key][-1] for d, r in by_depth.items()}
                       for key in ("train_loss", "train_error", "val_error")}
             for variant, by_depth in runs.items()}
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]), "final_epoch": final,
               "runs": {v: {str(d): r for d, r in by_depth.items()} for v, by_depth in runs.items()}}
    return write_results(__file__, config, results, figures={"residual_depth": plot(runs, config)},
                         out=out, started=started)


def plot(runs: dict, config: dict):
    variants, depths = list(runs), list(config["depths"])
    fig, axes = plt.subplots(1, len(variants) + 1, figsize=(5 * (len(variants) + 1), 4.6))
    cmap = plt.get_cmap("viridis")
    epochs = np.arange(1, config["epochs"] + 1)
    for ax, variant in zip(axes, variants):
        for j, depth in enumerate(depths):
            ax.plot(epochs, runs[variant][depth]["train_loss"], "o-", color=cmap(j / max(len(depths) - 1, 1)),
                    label=f"depth {depth}")
        ax.set(yscale="log", xlabel="epoch", ylabel="training loss (train mode, mean over the epoch)",
               title=variant.replace("_", " "))
    ax = axes[-1]
    for i, variant in enumerate(variants):
        ax.plot(depths, [runs[variant][d]["train_error"][-1] for d in depths], "o-", color=f"C{i}",
                label=f"{variant} train")
        ax.plot(depths, [runs[variant][d]["val_error"][-1] for d in depths], "s--", color=f"C{i}", alpha=0.6,
                label=f"{variant} val")
    ax.set(yscale="log", xlabel="weight layers", ylabel="error after the last epoch",
           title=f"error after {config['epochs']} epochs")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    # the same y range for the training-loss panels, so the depths compare across variants
    lo = min(min(r["train_loss"]) for by_depth in runs.values() for r in by_depth.values())
    hi = max(max(r["train_loss"]) for by_depth in runs.values() for r in by_depth.values())
    for ax in axes[:-1]:
        ax.set_ylim(lo * 0.8, hi * 1.2)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
