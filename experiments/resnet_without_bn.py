"""Can a deep ResNet train without BatchNorm, and what does zero-initialising the residual branches change?

Claim (/work/shared/reference/001_f4e8d95f5b8d410b.txt, "Residual Network (ResNet)", lines 1578-1686): residual
blocks are built "so that [all weights=0] correspond to [block=identity]", and ResNet "demonstrated that
extremely deep neural networks can be trained with residual connections and BN"; "residual connections and BN
are very common throughout all of deep learning". Two readings are tested. (1) BN is what lets the deep
residual net train from the standard (He) initialisation: without it, each block adds a branch of the
variance of its input, so the forward signal grows with depth and plain SGD at a usual rate diverges or
trains worse. (2) Without BN, starting every residual branch at zero -- the last conv of each branch
zero-initialised, so each block starts as the identity, the notes' "[all weights=0] correspond to
[block=identity]" (SkipInit / Fixup, De and Smith 2020, Zhang et al. 2019; the BN form is Goyal et al. 2017's
zero-initialised last BN scale) -- lets the same network train without normalisation.

Setup: ``experiments._nets.ConvNet(residual=True)`` with widths 8/16/32 and 3 two-conv blocks per stage: 20
weight layers (stem, 18 convs, dense head; 1x1 projection shortcuts where the width changes, not counted), He
normal kernels (``init.he_normal()``, the ResNet paper's init); 1,000 stratified MNIST-sample digits,
validated on the 1,000 held-out digits, both average-pooled to 14 x 14 (4x less compute than 28 x 28, to fit
the CPU budget) and standardised with MNIST's mean and std. Variants: ``bn`` (BatchNorm, standard init),
``bn_zero`` (BatchNorm, the last BN scale of each branch 0: ``zero_init_residual=True``), ``no_bn`` (no
normalisation, conv biases, standard init), ``no_bn_zero`` (no normalisation, the kernel and bias of the last
conv of each branch set to 0 after the standard init), ``no_bn_fixup`` (as ``no_bn_zero`` and the classifier's
kernel and bias 0 too: Fixup's rule 1, without its scalar multipliers and biases or its rescaling of the other
branch layers; added after a first run in which ``no_bn_zero`` trained on 2 of 5 seeds and, in a diagnostic on
the pilot seed, started from a logit std of 3.1 and a loss of 4.8 and settled at ln 10 for rates 0.001-0.01,
while zeroing the head too trained at 0.01-0.1). SGD momentum 0.9, batch 50, 6 epochs (120 steps), the
learning rate cosine-annealed to 0, so the final weights (and the BN running statistics, averaged over the last
epochs' near-zero steps) do not hang on one epoch's step size: the evaluation is the final state in evaluation
mode, no recomputation. Learning rate per variant: the grid ``lrs`` is tried on pilot seed ``pilot_seed`` = 100
(outside the reported seeds 0-4); the rate with the lowest final training loss (a diverged run counts as
+inf) is then used for the 5 paired seeds (``_protocol.SEEDS``: seed s gives every variant the same He
initial weights -- the zero-init variants zero some of them -- and the same batch order).

Measured per run: the training loss per epoch (mean over the epoch's steps, training mode), the final training
loss and error (evaluation mode on the 1,000 training digits), the validation error per epoch, and whether it
diverged (a non-finite loss or parameter: the run stops, its final numbers are non-finite, counted in
``n_nonfinite`` and left out of the means and the paired differences). Verdicts (``_protocol.verdict``, paired
over seeds, 95% interval): (a) ``no_bn_zero`` (and, in its Fixup form, ``no_bn_fixup``) reaches a lower final
training loss than ``no_bn``; (b) ``bn`` reaches a lower final training loss than ``no_bn``; the same comparisons
on the final validation error; reported besides: ``bn`` against ``no_bn_fixup`` and ``bn_zero`` against ``bn``.
``min_effect`` = 0: the notes give no size.

Run: python -m experiments.resnet_without_bn  ->  experiments/results/resnet_without_bn/
Result (default config, 210 s wall on the 2-core CPU shared with other jobs, load average 3.8 at the start and
6.8 at the end; the four variants of the first run came out bit for bit the same in this second one). Rates
chosen on the pilot seed: bn 0.1, bn_zero 0.1, no_bn 0.01 (0.03 and 0.1 diverged), no_bn_zero 0.03 (0.1
diverged), no_bn_fixup 0.1. No run of seeds 0-4 diverged. Final training loss / validation error (mean +- sem,
5 seeds): bn 0.025 +- 0.003 / 5.8 +- 0.3%; bn_zero 0.083 +- 0.005 / 7.4 +- 0.3%; no_bn 2.304 +- 0.000 / 90.0
+- 0.0% (it never leaves ln 10 on any seed); no_bn_zero 1.438 +- 0.412 / 56.1 +- 15.3% (it trains on 2 of 5
seeds: 12.9% and 25.5% validation error; 74-85% on the others); no_bn_fixup 1.907 +- 0.174 / 71.9 +- 7.0%.
Verdicts, paired over the 5 seeds: (a) zero-initialised branches beat the standard init without BN: training
loss -0.867 +- 0.412 (95% interval -2.012 to 0.278), validation error -33.9 +- 15.3 points (-76.4 to 8.6):
**partly** (every seed's loss is lower, but the interval reaches 0); in the Fixup form -0.397 +- 0.174 (-0.881
to 0.086) and -18.1 +- 7.0 points (-37.5 to 1.3): **partly**. (b) BN beats no BN (standard init): -2.279 +-
0.003 (-2.287 to -2.272) and -84.2 +- 0.3 points (-85.1 to -83.3): **reproduced**; BN also beats the Fixup form
by -1.882 +- 0.175 and -66.1 +- 6.9 points. Zero-initialised BN scales (Goyal et al.) end behind plain BN in
these 120 steps: +0.058 +- 0.006 training loss, +1.6 +- 0.5 points (not reproduced, not a claim of the notes).
So in this short budget a zero-initialised 20-layer ResNet without BN trains only sometimes, far behind BN;
the pilot seed's rate was a poor guide for it (no_bn_fixup reached 0.53 on the pilot, 1.40-2.30 on seeds 0-4),
and Fixup's scalar biases and multipliers, its rescaling and a warm-up, none of them used here, may be what it
needs.
"""
from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits, set_rate, train_run, with_traced_rate
from jaxnets import init, train
from jaxnets.data import augment

VARIANTS = {  # name: (norm, zero-initialised residual branches, zero-initialised classifier)
    "bn": ("batch", False, False), "bn_zero": ("batch", True, False), "no_bn": (None, False, False),
    "no_bn_zero": (None, True, False), "no_bn_fixup": (None, True, True)}

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, pilot_seed=100, data_seed=0, n_train=1000, n_val=1000, pool=2,
    mean=0.1307, std=0.3081,  # MNIST's pixel mean and std (of [0, 1] pixels)
    widths=(8, 16, 32), blocks_per_stage=3, kernel_init="he_normal", variants=tuple(VARIANTS),
    lrs=(0.01, 0.03, 0.1), epochs=6, batch_size=50, momentum=0.9, schedule="cosine to 0 over all steps",
    pilot_metric="final training loss (diverged = +inf)",
    min_effect=0.0,  # the notes give no size
    evaluation="final state after a cosine schedule to 0, evaluation mode (BN running statistics)",
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, n_val=None, pool=1, blocks_per_stage=5, epochs=30,
                   widths=(16, 32, 64))
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, n_val=100, pool=4, blocks_per_stage=1,
                   lrs=(0.03,), epochs=1, widths=(4,), batch_size=25, variants=("no_bn", "no_bn_fixup"))


def prepare(dataset: dict, config) -> dict:
    """uint8 [N, 28, 28, 1] -> float, average-pooled by ``pool`` and standardised."""
    x = np.asarray(augment.normalize(augment.to_float(dataset["image"]), config["mean"], config["std"]))
    p = config["pool"]
    n, h, w, c = x.shape
    x = x.reshape(n, h // p, p, w // p, p, c).mean(axis=(2, 4))
    return {"image": x.astype(np.float32), "label": np.asarray(dataset["label"])}


def branch_last_convs(config) -> list[str]:
    """The names of the last conv of every residual branch of the ``ConvNet`` without norm, in the order Flax
    names its convs: the stem ``Conv_0``, then per block the branch's two convs and, where the width changes,
    the 1x1 projection."""
    names, index = [], 1
    for s in range(len(config["widths"])):
        for b in range(config["blocks_per_stage"]):
            names.append(f"Conv_{index + 1}")
            index += 3 if (s > 0 and b == 0) else 2
    return names


def zero_branches(params: dict, config, *, head: bool) -> dict:
    """``params`` with the kernel and bias of each residual branch's last conv set to 0 (block = identity), and
    with ``head`` the classifier's too (Fixup's rule 1)."""
    params = dict(params)
    for name in branch_last_convs(config):
        kernel = params[name]["kernel"]
        if kernel.shape[:2] != (3, 3) or kernel.shape[2] != kernel.shape[3]:
            raise ValueError(f"zero_branches: {name} is not a branch's last 3x3 conv: kernel {kernel.shape}.")
        params[name] = jax.tree.map(jnp.zeros_like, params[name])
    if head:
        params["Dense_0"] = jax.tree.map(jnp.zeros_like, params["Dense_0"])
    return params


def one_run(model, step, tx, datasets, variant: str, seed: int, lr: float, config) -> dict:
    """Train one variant from seed ``seed`` at peak rate ``lr``; the per-epoch curves and final numbers."""
    train_set, val_set = datasets
    state = train.TrainState.create(model, tx, train_set["image"][:1], seed)
    norm, zero, head = VARIANTS[variant]
    if norm is None and zero:
        state = state.replace(params=zero_branches(state.params, config, head=head))
    state = set_rate(state, lr)
    t0 = time.perf_counter()
    state, rec = train_run(state, train_set, val_set, epochs=config["epochs"], batch_size=config["batch_size"],
                           seed=seed, step=step)
    if rec["diverged"]:
        final_loss = final_error = final_val = math.nan
    else:
        ev = train.evaluate(state, train_set, batch_size=500)
        final_loss, final_error, final_val = ev["loss"], 1 - ev["accuracy"], rec["final_val_error"]
    pad = config["epochs"] - len(rec["train_loss"])  # a diverged run's curves end early: nan after
    row = {"variant": variant, "seed": seed, "lr": lr, "diverged": rec["diverged"],
           "train_loss": rec["train_loss"] + [math.nan] * pad, "val_error": rec["val_error"] + [math.nan] * pad,
           "final_train_loss": final_loss, "final_train_error": final_error, "final_val_error": final_val,
           "first_step_loss": rec["step_loss"][0] if rec["step_loss"] else math.nan,
           "seconds": time.perf_counter() - t0}
    print(f"{variant:10s} seed {seed:3d} lr {lr:<6g} train loss {final_loss:.4f}  val error {final_val:.4f}  "
          f"{'DIVERGED ' if rec['diverged'] else ''}[{row['seconds']:.1f} s]", flush=True)
    return row


def main(config=CONFIG, *, out=None):
    """A 20-layer ResNet with and without BN, with and without zero-initialised residual branches."""
    started = time.perf_counter()
    load_start = machine_load()
    train_set, val_set = (prepare(d, config) for d in mnist_splits(config["n_train"], config["n_val"],
                                                                  seed=config["data_seed"]))
    steps = config["epochs"] * (len(train_set["label"]) // config["batch_size"])
    # One optimizer for every rate (the peak is a traced value, set per run): one compiled step per model.
    tx = with_traced_rate(train.optimizer("sgd", learning_rate=train.schedules.cosine(1.0, steps),
                                          momentum=config["momentum"]))
    kernel_init = getattr(init, config["kernel_init"])()
    compiled = {}  # (norm, BN zero-init) -> (model, jitted step): the no-BN zero-init variant zeroes weights
    for v in config["variants"]:
        norm, zero, _ = VARIANTS[v]
        key = (norm, zero and norm is not None)
        if key not in compiled:
            model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"], norm=norm,
                            residual=True, zero_init_residual=key[1], kernel_init=kernel_init)
            compiled[key] = (model, jax.jit(train.make_train_step()))

    def run_variant(variant, seed, lr):
        norm, zero, _ = VARIANTS[variant]
        model, step = compiled[(norm, zero and norm is not None)]
        return one_run(model, step, tx, (train_set, val_set), variant, seed, lr, config)

    pilot = {v: [run_variant(v, config["pilot_seed"], lr) for lr in config["lrs"]] for v in config["variants"]}
    chosen = {v: min(rows, key=lambda r: r["final_train_loss"] if math.isfinite(r["final_train_loss"])
                     else math.inf)["lr"] for v, rows in pilot.items()}
    print("chosen rates:", chosen, flush=True)
    runs = {v: [run_variant(v, seed, chosen[v]) for seed in config["seeds"]] for v in config["variants"]}

    results = summarize(config, runs)
    results["pilot"] = {"seed": config["pilot_seed"], "chosen_lr": chosen,
                        "runs": {v: [{k: r[k] for k in ("lr", "final_train_loss", "final_val_error", "diverged")}
                                     for r in rows] for v, rows in pilot.items()}}
    results["machine_load"] = {"start": load_start, "end": machine_load()}
    return write_results(__file__, config, results, figures={"resnet_without_bn": plot(config, runs, chosen)},
                         out=out, started=started)


def summarize(config, runs) -> dict:
    """Per variant: mean +- sem of the final numbers, divergences; the paired verdicts."""
    metrics = ("final_train_loss", "final_train_error", "final_val_error")
    per_variant = {v: {**{m: protocol.estimate([r[m] for r in rows]) for m in metrics},
                       "train_loss_text": protocol.describe([r["final_train_loss"] for r in rows], digits=3),
                       "val_error_text": protocol.describe([r["final_val_error"] for r in rows], scale=100, unit="%"),
                       "lr": rows[0]["lr"], "diverged": sum(r["diverged"] for r in rows)}
                   for v, rows in runs.items()}
    comparisons = {"zero_init_beats_standard_without_bn": ("no_bn", "no_bn_zero"),
                   "fixup_init_beats_standard_without_bn": ("no_bn", "no_bn_fixup"),
                   "bn_beats_no_bn": ("no_bn", "bn"), "bn_beats_fixup_init": ("no_bn_fixup", "bn"),
                   "zero_init_with_bn": ("bn", "bn_zero")}
    claims = {}
    for name, (a, b) in comparisons.items():
        if a not in runs or b not in runs:
            continue
        for metric, scale, unit, digits in (("final_train_loss", 1, "", 3), ("final_val_error", 100, " points", 1)):
            d = protocol.paired([r[metric] for r in runs[a]], [r[metric] for r in runs[b]])
            claims[f"{name}__{metric}"] = {
                "claim": f"{b} reaches a lower {metric.replace('_', ' ')} than {a}", "a": a, "b": b,
                "difference_b_minus_a": d, "difference_text": protocol.describe(d, scale=scale, unit=unit,
                                                                                 digits=digits),
                "min_effect": config["min_effect"],
                "verdict": protocol.verdict(d, direction="lower", min_effect=config["min_effect"])}
    claims_note = ("the notes' claims: zero_init_beats_standard_without_bn (with fixup_init_... its Fixup form) and "
                   "bn_beats_no_bn; bn_beats_fixup_init and zero_init_with_bn are reported, not claims of the notes")
    return {"per_variant": per_variant, "claims": claims, "note": claims_note, "runs": runs}


def plot(config, runs, chosen):
    """Training loss and validation error per epoch, mean +- sem band over the seeds, per variant."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    epochs = np.arange(1, config["epochs"] + 1)
    for v, rows in runs.items():
        label = f"{v} (lr {chosen[v]:g}, {sum(r['diverged'] for r in rows)} diverged)"
        protocol.band(axes[0], epochs, [r["train_loss"] for r in rows], label=label)
        protocol.band(axes[1], epochs, [r["val_error"] for r in rows], label=label, scale=100)
    axes[0].set(xlabel="epoch", ylabel="training loss (mean over the epoch's steps)", yscale="log",
                title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation error (%)", yscale="log", title="validation error")
    depth = 2 + 2 * len(config["widths"]) * config["blocks_per_stage"]
    return finish_figure(fig, axes, legend={"fontsize": 7}, suptitle=(
        f"{depth}-layer ResNet (widths {tuple(config['widths'])}), mean +- sem over {len(config['seeds'])} "
        f"paired seeds, SGD momentum, cosine to 0"))


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
