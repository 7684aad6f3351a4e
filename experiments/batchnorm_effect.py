"""Does batch normalization let a deep CNN train at larger learning rates, faster, and from any init scale?

Claims: "allows the use of higher learning rates; careful initialization is less important"
(004_ed4cfd944757b1b5.txt, "Pros & Cons of BN"); "The use of batch norm makes the scaling of weight
initialization less important" and "Training of VGGNet ... becomes much easier with BN"
(000_3cfbcdab51860f78.txt, Concepts 6.49 and 6.51); "Robust learning: less sensitive to vanishing or
exploding gradient (improves beta smoothness => faster learning)" (002_de9ed5bb46c1eb74.txt).

Setup: the network of ``init_trains_deep_nets`` (``experiments._nets.ConvNet``, widths (8, 16, 32), 4
blocks per stage: 14 weight layers, ReLU, no residual connections), He-initialized, with ``norm=None``
(convs with PyTorch-default biases) or ``norm="batch"`` (BatchNorm after every conv, convs without bias).
The same data and training as there: 1,024 MNIST-sample digits (standardised), 500 held out, SGD with
momentum 0.9, batch 32, here 8 epochs (256 steps). (a) Learning rates 0.01 to 1.0, with and without BN.
(b) The initialization scale: every kernel (convs and head) drawn from He's distribution times 0.1, 1 or
10 (``init.variance_scaling(2 s^2)``), with and without BN, at one learning rate. A run whose loss turns
non-finite (``NonFiniteLossError``) is recorded as "diverged", with its step. With BN each conv kernel
is followed by a normalization, so the network's function does not depend on the kernels' scale; the
scale still sets the effective step size (with the rest of the network fixed, the gradient of a
scale-invariant weight shrinks as 1/scale and the relative update ``lr |g| / |w|`` as 1/scale^2; here the
head is scaled too, see the result); the results record how much each run's conv kernels grew.

Run: python -m experiments.batchnorm_effect  ->  experiments/results/batchnorm_effect/
Result (default config, one seed, 203 s wall on a quiet 2-core CPU): BN's training loss falls at every
learning rate from 0.01 to 1.0, and its validation error ends under 0.5 at 0.01 to 0.3; the plain net learns
only at the two smallest and reaches 0.5 validation error only at 0.03 (epoch 7). Validation error after
256 steps at lr 0.01 / 0.03 / 0.1 / 0.3 / 1.0: without BN 0.54 / 0.40 / 0.90 / 0.90 / non-finite loss at
step 5 (training loss 1.57, 1.34; at 0.1 and 0.3 it stays at ln 10: 2.31, 2.32); with BN 0.11 / 0.22 / 0.07 /
0.10 / 0.63 (training loss 0.19, 0.13, 0.11, 0.21, 0.56; lr 1.0's 0.63 is an evaluation-mode jump, 0.32 one
epoch earlier, and lr 0.03 was at 0.09 at epoch 5). Faster: at lr 0.01 the plain net sits at ln 10 for ~100
steps and ends at training loss 1.57 (validation error 0.54, still falling), BN ends at 0.19, first under 0.5
validation error at epoch 3 (epoch 2 at lr 0.03); at each one's best rate the plain net (0.03) ends at
training loss 1.34, BN (0.1) at 0.11. With one seed the edge rates are fragile: the plain net leaves ln 10 at
0.03 only in epoch 3, and a run with the previous library version (different float rounding) stayed there.
Init scale (He x 0.1 / 1 / 10, lr 0.01): without BN, x 0.1 is stuck (layer 1's gradient 1e12x smaller than
the head's; validation error 0.90) and x 10 starts at loss 2.6e14 and turns non-finite at step 30; with BN
all three train (validation error 0.32 / 0.11 / 0.32, training loss 0.23 / 0.19 / 0.81; x 0.1 was at 0.14 at
epoch 5). The scale still matters with BN: the conv kernels' gradients at init are the same at every scale
(0.18 / 0.18 / 0.20 at layer 1: the head, not normalised, is scaled too and multiplies the backward signal by
the scale), so the relative step goes as 1/scale (not 1/scale^2); at x 0.1 the conv kernels grew from norm
2.15 to 4.47, at x 1 and x 10 they barely moved (21.5 -> 21.6, 215 -> 215), and x 10 trains the slowest
(training loss 0.81), its head starting at loss 10.4 (logit std 6.7). Without BN, lr 0.3 grew the kernels
21.5 -> 68 without learning; with BN, lr 1.0 grew them to 70 and the training loss still fell.
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, first_epoch, run, write_results
from experiments._nets import ConvNet, at_init, mnist_splits, standardize, train_one
from jaxnets import init, train

CONFIG = dict(
    preset="default", seed=0, n_train=1024, n_val=500, widths=(8, 16, 32), blocks_per_stage=4,
    activation="relu", input_mean=0.1307, input_std=0.3081,
    momentum=0.9, batch_size=32, epochs=8, trained_val_error=0.5, diagnostic_batch=256,
    norms=("none", "batch"), lrs=(0.01, 0.03, 0.1, 0.3, 1.0),
    scale_lr=0.01, init_scales=(0.1, 1.0, 10.0),  # (b): He x scale, at lr scale_lr
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=4000, n_val=1000, widths=(16, 32, 64), blocks_per_stage=6,
                   epochs=20, lrs=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0), init_scales=(0.01, 0.1, 1.0, 10.0, 100.0))
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=128, n_val=64, widths=(4, 4, 4), blocks_per_stage=1, epochs=1,
                   lrs=(0.03,), init_scales=(1.0,), diagnostic_batch=32)

NORM = {"none": None, "batch": "batch"}
LABEL = {"none": "no BN", "batch": "BN"}


def conv_kernel_norm(params: dict) -> float:
    """L2 norm of all conv kernels together (the scale-invariant weights when BN follows them)."""
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(p["kernel"], np.float64)))
                             for k, p in params.items() if k.startswith("Conv_"))))


def train_run(config, norm: str, lr: float, scale: float, data) -> dict:
    """One network (BN or not, He x ``scale``) trained at ``lr``; the run's row."""
    train_set, val_set, preprocess = data
    diag = {k: v[:config["diagnostic_batch"]] for k, v in train_set.items()}
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"],
                    norm=NORM[norm], activation=config["activation"],
                    kernel_init=init.variance_scaling(2.0 * scale ** 2, mode="fan_in", distribution="normal"))
    tx = train.optimizer("sgd", learning_rate=lr, momentum=config["momentum"])
    fresh = train.TrainState.create(model, tx, train_set["image"][:1], config["seed"])  # fit's initial state
    start = at_init(fresh, diag, preprocess)  # training mode: what the first SGD step sees
    before = train.evaluate(fresh, val_set, preprocess=preprocess)  # eval mode: BN with its initial running stats
    row, state = train_one(model, config, tx, preprocess, train_set, val_set, config["seed"])
    row.update(norm=norm, lr=lr, init_scale=scale, depth=model.depth, at_init=start,
               eval_mode_val_loss_at_init=before["loss"], eval_mode_val_error_at_init=1.0 - before["accuracy"],
               first_epoch_trained=first_epoch(row["val_error"], config["trained_val_error"], strict=False),
               final_train_loss=row["train_loss"][-1] if row["train_loss"] else None,
               conv_kernel_norm_init=conv_kernel_norm(fresh.params),
               conv_kernel_norm_final=None if state is None else conv_kernel_norm(state.params))
    print(f"{LABEL[norm]:5s} lr {lr:<5g} He x {scale:<4g}: {row['status']:13s} diverged at {row['diverged_at_step']}; "
          f"loss at init {start['loss']:9.3g} (eval mode {before['loss']:9.3g}); train loss {[round(v, 3) for v in row['train_loss']]}; "
          f"val error {row['final_val_error']}; |conv kernels| {row['conv_kernel_norm_init']:.3g} -> "
          f"{row['conv_kernel_norm_final']} [{row['seconds']:.0f} s]", flush=True)
    return row


def main(config=CONFIG, *, out=None):
    """(a) a learning-rate sweep and (b) an init-scale sweep, each with and without BatchNorm."""
    started = time.perf_counter()
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["seed"])
    data = (train_set, val_set, standardize(config["input_mean"], config["input_std"]))
    lr_sweep = {norm: [train_run(config, norm, lr, 1.0, data) for lr in config["lrs"]] for norm in config["norms"]}
    scale_sweep = {}
    for norm in config["norms"]:
        scale_sweep[norm] = []
        for scale in config["init_scales"]:
            same = [r for r in lr_sweep[norm] if scale == 1.0 and r["lr"] == config["scale_lr"]]
            scale_sweep[norm].append(same[0] if same else train_run(config, norm, config["scale_lr"], scale, data))
    summary = {name: {LABEL[norm]: {f"{key} {r[key]:g}": {"status": r["status"], "final_val_error": r["final_val_error"],
                                                           "final_train_loss": r["final_train_loss"],
                                                           "diverged_at_step": r["diverged_at_step"]}
                                    for r in rows}
                      for norm, rows in sweep.items()}
               for name, sweep, key in (("lr", lr_sweep, "lr"), ("init_scale", scale_sweep, "init_scale"))}
    results = {"steps_per_epoch": config["n_train"] // config["batch_size"], "lr_sweep": lr_sweep,
               "init_scale_sweep": scale_sweep, "summary": summary}
    figures = {"lr_sweep": plot_lr(results, config), "init_scale": plot_scale(results, config)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def _curve(ax, r: dict, spe: int, color, label: str, ceiling: float = 3.0):
    """Training loss against step (step 0: at init, training mode); an X where the loss went non-finite."""
    steps = np.arange(len(r["train_loss"]) + 1) * spe
    ax.plot(steps, np.minimum([r["at_init"]["loss"], *r["train_loss"]], ceiling), "o-", ms=3, color=color,
            label=label)
    if r["status"] == "diverged":
        ax.plot([r["diverged_at_step"]], [ceiling], "X", ms=11, color=color)


def _describe(r: dict) -> str:
    if r["status"] == "diverged":
        return f"diverged at step {r['diverged_at_step']}"
    return f"val error {r['final_val_error']:.3f}"


def plot_lr(results: dict, config: dict):
    fig, axes = plt.subplots(1, 1 + len(config["norms"]), figsize=(6 + 5.5 * len(config["norms"]), 4.8))
    spe = results["steps_per_epoch"]
    for i, norm in enumerate(config["norms"]):
        rows = results["lr_sweep"][norm]
        errors = [1.0 if r["status"] == "diverged" else r["final_val_error"] for r in rows]
        axes[0].plot([r["lr"] for r in rows], errors, "o-", color=f"C{i}", label=LABEL[norm])
        for r, e in zip(rows, errors):
            if r["status"] == "diverged":
                axes[0].plot([r["lr"]], [e], "X", ms=12, color=f"C{i}")
        cmap = plt.get_cmap("plasma")
        for j, r in enumerate(rows):
            _curve(axes[1 + i], r, spe, cmap(j / max(len(rows) - 1, 1) * 0.85), f"lr {r['lr']:g}: {_describe(r)}")
        axes[1 + i].set(title=f"{LABEL[norm]}: training loss (step 0: at init; X: non-finite)", xlabel="SGD step",
                        ylabel="training loss (epoch mean)", ylim=(0, 3.1))
        axes[1 + i].axhline(np.log(10), color="k", ls=":", lw=1)
    axes[0].axhline(0.9, color="k", ls=":", lw=1, label="chance")
    axes[0].set(xscale="log", xlabel="learning rate (SGD, momentum 0.9)", ylim=(0, 1.02),
                ylabel=f"validation error after {config['epochs']} epochs (X: diverged)",
                title="final validation error against learning rate")
    return finish_figure(fig, axes, legend={"fontsize": 8},
                         suptitle=f"{results['lr_sweep'][config['norms'][0]][0]['depth']}-layer plain CNN, He init, "
                                  f"{config['n_train']} MNIST digits, batch {config['batch_size']}, "
                                  f"{config['epochs']} epochs")


def plot_scale(results: dict, config: dict):
    fig, axes = plt.subplots(1, len(config["norms"]), figsize=(6.5 * len(config["norms"]), 4.8), squeeze=False)
    spe = results["steps_per_epoch"]
    for ax, norm in zip(axes[0], config["norms"]):
        for j, r in enumerate(results["init_scale_sweep"][norm]):
            _curve(ax, r, spe, f"C{j}", f"He x {r['init_scale']:g} (loss at init {r['at_init']['loss']:.3g}): "
                                        f"{_describe(r)}")
        ax.axhline(np.log(10), color="k", ls=":", lw=1)
        ax.set(title=f"{LABEL[norm]}: kernels drawn from He x scale, lr {config['scale_lr']:g}", xlabel="SGD step",
               ylabel="training loss (epoch mean; step 0: at init)", ylim=(0, 3.1))
    return finish_figure(fig, axes[0], legend={"fontsize": 8})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
