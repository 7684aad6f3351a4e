"""Do deeper plain CNNs train worse than shallower ones, and do residual connections remove the degradation?

Claim (course notes, 001_f4e8d95f5b8d410b.txt, "Residual Network (ResNet)"; He, Zhang, Ren & Sun, CVPR 2016):
"more layers is not always better"; the deeper plain network has the higher TRAINING error ("not due to
overfitting"), so deeper networks are harder to optimize; a residual block, for which [all weights = 0]
means [block = identity], lets the deeper network do at least as well as the shallower one.

Setup: ``experiments._nets.ConvNet`` with BatchNorm and ReLU (PyTorch's default init), three stages, compared
at EQUAL numbers of weight layers, ``depth = 2 + (convs per stage) x 3`` (stem, convs, dense head; as He et
al. count, the two 1 x 1 projection shortcuts of the residual nets are not counted): a plain net with
``(depth - 2) / 3`` one-conv blocks per stage against a residual net with ``(depth - 2) / 6`` two-conv
blocks per stage. Protocol (experiments/_protocol.py): 5 paired seeds (seed s gives every depth and variant
its initial weights and data order from s), SGD + momentum with a cosine learning rate annealed to 0
(so the final epoch's numbers do not hang on one snapshot of a moving model, and BN's running averages
settle; no recomputation), a stratified subset of the MNIST sample average-pooled to 14 x 14.

Measured per depth, variant and seed: training loss and error of the LAST epoch (train mode, mean over the
epoch's batches as they ran, at a learning rate annealing to 0: the quantity He et al. plot), and the
validation error after training (eval mode). Claims judged by ``_protocol.verdict`` on paired differences
(b - a, per seed) of the final training error, at depths 8 / 20 / 32 / 56: (1) the deepest plain net minus
the 8- and the 20-layer plain nets > 0 (degradation; min_effect 1 point); (2) the deepest residual net equals
the 8- and the 20-layer residual nets within +-1 point (``direction="same"``, margin 1 point, the smallest
gap counted as a degradation in (1)): "does at least as well" read as "no difference larger than the margin";
(3) residual minus plain at 32 and at 56 layers < 0 (min_effect 1 point). The per-seed difference of every
depth from the next shallower one is recorded too (``train_error_next_depth_minus_previous``).

Run: python -m experiments.residual_depth  ->  experiments/results/residual_depth/
Result (default config: widths 8/16/32, 1,000 training digits pooled to 14 x 14, SGD momentum 0.9, lr 0.05
cosine-annealed to 0 over 12 epochs = 240 steps, batch 50, 5 paired seeds; 1769.91 s wall on a 2-core CPU
shared with other jobs, load average 11.6 at the start and 18-24 for most of the run: an upper bound; the
depths 8-32 alone took 295 s at load 4.5 on 2026-12-07, and give the same numbers bit for bit): final-epoch
training error (mean +- sem) at 8 / 20 / 32 / 56 weight layers: plain 0.04 +- 0.02 / 1.26 +- 0.29 /
29.82 +- 6.94 / 79.74 +- 3.68%, residual 0.02 +- 0.02 / 0.08 +- 0.04 / 0.40 +- 0.07 / 3.36 +- 2.33% (training
loss plain 0.016 / 0.069 / 0.821 / 2.095, residual 0.012 / 0.011 / 0.021 / 0.112; validation error plain
5.28 / 6.84 / 35.24 / 82.08%, residual 4.88 / 4.80 / 5.64 / 10.96%). Paired differences: plain 56 - plain 8
= +79.7 +- 3.7 points (95% interval [69.4, 90.0]) and plain 56 - plain 20 = +78.5 +- 3.8 ([68.0, 88.9]):
reproduced, the deeper plain net fits the training set worse (not overfitting: its validation error rises
with it). Residual 56 - residual 8 = +3.3 +- 2.3 points ([-3.1, 9.8]) and residual 56 - residual 20 = +3.3
+- 2.3 ([-3.1, 9.7]): partly (margin 1 point): the interval neither lies within +-1 point nor excludes 0.
The 56-layer residual net ends at 0.2 / 1.3 / 12.6 / 0.6 / 2.1% on seeds 0-4, and the slow seeds are still
learning when the learning rate reaches 0 (seed 2: training loss 0.454, 0.430, 0.380 over the last three
epochs): at 56 layers 240 steps do not reach convergence, so this run cannot tell a degradation from slower
training. (At 32 layers the same rule reads reproduced: residual 32 - residual 8 = +0.4 +- 0.1, [0.2, 0.5],
inside +-1 point.) Residual - plain = -76.4 +- 3.0 points at 56 layers ([-84.8, -68.0]) and -29.4 +- 7.0 at
32 ([-48.8, -10.0]): reproduced. Details: experiments/README.md.
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, train

CONFIG = dict(
    preset="default", dataset="mnist_sample", data_root="data", seeds=protocol.SEEDS, data_seed=0,
    n_train=1000, n_val=500, pool=2, widths=(8, 16, 32), depths=(8, 20, 32, 56), variants=("plain", "residual"),
    optimizer="sgd", lr=0.05, momentum=0.9, epochs=12, batch_size=50,
    # the smallest gaps the claims describe, in training-error units (He et al.: several points); the margin
    # of "the residual net does not degrade" (a claim of no difference) is the same 1 point: a gap smaller
    # than the smallest one counted as a degradation of the plain nets
    min_effect={"plain_degrades": 0.01, "plain_vs_residual": 0.01, "residual_same_margin": 0.01},
)
# --full: He et al.'s CIFAR-10 setting (widths 16/32/64, depths 6n + 2): place CIFAR-10 under
# data_root/cifar10/ (see jaxnets.data.load_cifar10); the 10,000 test images serve as validation.
FULL_CONFIG = dict(CONFIG, preset="full", dataset="cifar10", n_train=None, n_val=None, pool=1,
                   widths=(16, 32, 64), depths=(20, 32, 44, 56), lr=0.1, epochs=160, batch_size=128)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, n_val=50, widths=(4, 4, 8), depths=(8,),
                   epochs=1, batch_size=25)


def _pool(split: dict, k: int) -> dict:
    """Average-pool the uint8 images k x k (28 x 28 -> 14 x 14 for k = 2), rounding back to uint8."""
    if k == 1:
        return split
    x = np.asarray(split["image"], dtype=np.float32)
    n, h, w, c = x.shape
    x = x.reshape(n, h // k, k, w // k, k, c).mean(axis=(2, 4))
    return dict(split, image=np.round(x).astype(np.uint8))


def load(config: dict):
    if config["dataset"] == "cifar10":  # raises FileNotFoundError (saying where to put it) when absent
        return data.load_cifar10(config["data_root"])
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    return _pool(train_set, config["pool"]), _pool(val_set, config["pool"])


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
    if model.depth != depth:
        raise RuntimeError(f"residual_depth: built {model.depth} weight layers, expected {depth}.")
    return model


def main(config=CONFIG, *, out=None):
    """Train plain and residual nets of each depth over paired seeds; final training error and loss."""
    started = time.perf_counter()
    load_before = machine_load()
    train_set, val_set = load(config)
    seeds = list(config["seeds"])
    steps_per_epoch = len(train_set["label"]) // config["batch_size"]
    schedule = train.schedules.cosine(config["lr"], config["epochs"] * steps_per_epoch)  # annealed to 0 at the last step
    tx = train.optimizer(config["optimizer"], learning_rate=schedule, momentum=config["momentum"])
    runs = {variant: {} for variant in config["variants"]}
    for depth in config["depths"]:
        for variant in config["variants"]:
            t = time.perf_counter()
            _, h = train.fit(build(variant, depth, config["widths"]), train_set, val_data=val_set,
                             epochs=config["epochs"], batch_size=config["batch_size"], optimizer=tx,
                             seeds=seeds, progress=False)
            members = [h.member(r) for r in range(len(seeds))]
            runs[variant][depth] = {
                "seeds": seeds, "seconds": time.perf_counter() - t,
                "train_loss": [m.train_loss for m in members], "train_error": [m.train_error for m in members],
                "val_error": [m.val_error for m in members],
                "final_train_loss": [m.train_loss[-1] for m in members],
                "final_train_error": [m.train_error[-1] for m in members],
                "final_val_error": [m.val_error[-1] for m in members]}
            r = runs[variant][depth]
            print(f"depth {depth:3d} {variant:9s} train err {protocol.describe(r['final_train_error'], scale=100, unit='%')}"
                  f"  loss {protocol.describe(r['final_train_loss'], digits=3)}"
                  f"  val err {protocol.describe(r['final_val_error'], scale=100, unit='%')} [{r['seconds']:.0f} s]",
                  flush=True)
    summary = {variant: {str(d): {key: protocol.estimate(r[f"final_{key}"])
                                  for key in ("train_error", "train_loss", "val_error")}
                         for d, r in by_depth.items()} for variant, by_depth in runs.items()}
    claims = judge(runs, config)
    depths = sorted(config["depths"])
    # every depth against the next shallower one, per variant (paired): where the degradation sets in
    steps_between = {variant: {f"{b} - {a}": protocol.paired(by_depth[a]["final_train_error"],
                                                             by_depth[b]["final_train_error"])
                               for a, b in zip(depths, depths[1:])} for variant, by_depth in runs.items()}
    for c in claims:
        print(f"{c['verdict']:15s} {c['claim']}: {c['difference_text']}")
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]),
               "steps": config["epochs"] * steps_per_epoch,
               "evaluation": "cosine learning rate annealed to 0; last epoch's train-mode training error/loss; "
                             "eval-mode validation error with BN running averages (no recomputation)",
               "summary": summary, "claims": claims, "train_error_next_depth_minus_previous": steps_between,
               "machine_load_before": load_before,
               "machine_load_after": machine_load(),
               "runs": {v: {str(d): r for d, r in by_depth.items()} for v, by_depth in runs.items()}}
    return write_results(__file__, config, results, figures={"residual_depth": plot(runs, config)},
                         out=out, started=started)


def _claim(claim: str, a: str, b: str, values_a, values_b, *, direction: str, min_effect: float) -> dict:
    d = protocol.paired(values_a, values_b)
    return {"claim": claim, "a": a, "b": b, "metric": "final-epoch training error (train mode, lr annealed to 0)",
            "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
            "direction": direction, "min_effect": min_effect,
            "verdict": protocol.verdict(d, direction=direction, min_effect=min_effect)}


def judge(runs: dict, config: dict) -> list[dict]:
    """The paired claims (differences b - a of the final training error, per seed): the deepest nets against
    the two shallowest depths, and residual against plain at the two deepest depths."""
    depths = sorted(config["depths"])
    hi = depths[-1]
    shallower = depths[:-1][:2] or depths[:1]  # 8 and 20 layers in the default config
    deep = [d for d in depths[-2:] if d >= 20] or [hi]  # 32 and 56 layers
    plain, res = runs["plain"], runs["residual"]
    sizes = config["min_effect"]
    claims = [_claim(f"the deeper plain net has the higher training error ({hi} vs {lo} layers)", f"plain {lo}",
                     f"plain {hi}", plain[lo]["final_train_error"], plain[hi]["final_train_error"],
                     direction="higher", min_effect=sizes["plain_degrades"]) for lo in shallower]
    # "does not degrade" is a claim of no difference: the deep residual net's training error equals the shallow
    # one's within +- the margin (an equivalence test: the whole 95% interval inside +- margin).
    claims += [_claim(f"the deeper residual net does not degrade: its training error equals the shallower one's "
                      f"within +-{100 * sizes['residual_same_margin']:g} point ({hi} vs {lo} layers)",
                      f"residual {lo}", f"residual {hi}", res[lo]["final_train_error"],
                      res[hi]["final_train_error"], direction="same", min_effect=sizes["residual_same_margin"])
               for lo in shallower]
    claims += [_claim(f"at {d} layers the residual net has the lower training error than the plain net",
                      f"plain {d}", f"residual {d}", plain[d]["final_train_error"], res[d]["final_train_error"],
                      direction="lower", min_effect=sizes["plain_vs_residual"]) for d in reversed(deep)]
    return claims


def plot(runs: dict, config: dict):
    variants, depths = list(runs), list(config["depths"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for i, variant in enumerate(variants):
        for ax, key, label in ((axes[0], "final_train_error", "training error, last epoch (%)"),
                               (axes[1], "final_train_loss", "training loss, last epoch"),
                               (axes[2], "final_val_error", "validation error after training (%)")):
            per_seed = np.array([runs[variant][d][key] for d in depths]).T  # [seeds, depths]
            scale = 1.0 if key == "final_train_loss" else 100.0
            protocol.band(ax, depths, per_seed, scale=scale, color=f"C{i}", marker="o", label=variant)
            ax.set(xlabel="weight layers", ylabel=label, xticks=depths)
    n = len(config["seeds"])
    axes[0].set_title(f"training error vs depth (mean +- sem, {n} seeds)")
    axes[1].set_title("training loss vs depth")
    axes[2].set_title("validation error vs depth")
    for ax in axes:
        ax.set_ylim(bottom=0)  # linear axes from 0: small gaps are not magnified
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{config['epochs']} epochs, cosine lr {config['lr']} -> 0, {config['n_train']} digits")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
