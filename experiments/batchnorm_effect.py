"""Does batch normalization let a deep CNN train at larger learning rates, faster, and from any init scale?

Claims: "allows the use of higher learning rates; careful initialization is less important"
(004_ed4cfd944757b1b5.txt, "Pros & Cons of BN"); "The use of batch norm makes the scaling of weight
initialization less important" and "Training of VGGNet ... becomes much easier with BN"
(000_3cfbcdab51860f78.txt, Concepts 6.49 and 6.51); "Robust learning: less sensitive to vanishing or
exploding gradient (improves beta smoothness => faster learning)" (002_de9ed5bb46c1eb74.txt).

Setup: the plain deep CNN of ``init_trains_deep_nets`` (``experiments._nets.ConvNet``, widths (8, 16, 32), 4
blocks per stage: 14 weight layers, ReLU, no residual connections), He-initialized, with ``norm=None`` (convs
with PyTorch-default biases) or ``norm="batch"`` (BatchNorm after every conv, convs without bias). 1,020
stratified MNIST-sample digits for training (``n_train=1024`` asks for 1,024; the stratified split keeps
1,020), 500 held out, standardised and average-pooled to 14 x 14 (4x less compute than 28 x 28, so that 5
seeds fit the CPU budget). SGD with momentum 0.9, batch 32, 8 epochs (248 steps: 31 full batches per epoch),
the rate annealed from its peak to 0 by a cosine schedule. Protocol (``_protocol``): 5 paired seeds (seed s
gives every setting the same initial kernels and the same batch order); evaluation after the anneal, with
BatchNorm statistics RECOMPUTED over the 1,020 training digits (``train.recompute_batch_stats``; the running
averages are reported beside them); every number is mean +- sem over the seeds. (a) Peak rates 0.02, 0.2,
1.0, with and without BN. (b) The init scale: every kernel (convs and head) drawn from He's distribution
times 0.1, 1 or 10 (``init.variance_scaling(2 s^2)``), with and without BN, at lr 0.02. The plain net's rate
0.02 had the lowest mean validation error in a trial of the plain net at 0.01, 0.02, 0.03 (seeds 0-4, the
cosine over 256 steps instead of 248; not committed): 21.0% against 25.4% and 35.8%, where 0.03 left one seed
at ln 10 (81%); the choice favours the baseline, not BN. A seed whose loss turns non-finite is frozen by
``fit`` and recorded as diverged; a diverged network counts as chance (90% validation error) in the
verdicts. Verdicts (``_protocol.verdict`` on the per-seed differences BN - no BN):
- "higher rates": final validation error at lr 0.2 and at lr 1.0 (10x and 50x the rate the plain net
  trains at), lower with BN by at least 40 points (min_effect 0.4: "allows" read as the difference between a
  net that trains, under 50%, and one at chance, 90%; the notes give no number);
- "faster": the training loss averaged over the 8 epochs (the area under the training curve) at lr 0.02,
  lower with BN (min_effect 0: the notes give no size);
- "init scale less important": per seed, the spread (max - min) of the final validation error over the
  three scales, smaller with BN (min_effect 0: the notes give no size).

Run: python -m experiments.batchnorm_effect  ->  experiments/results/batchnorm_effect/
Result (default config, 5 paired seeds, mean +- sem; 1,042 s wall on a 2-core CPU shared with other jobs,
load average 15-21: an upper bound). All three claims reproduced.
(a) Validation error after the anneal at peak lr 0.02 / 0.2 / 1.0: without BN 24.1 +- 4.0% / 90.0 +- 0.0% /
90.0 +- 0.0% (at 0.2 and 1.0 every seed stays at ln 10: final training loss 2.303 and 2.304, while the conv
kernels' norm ends at 28.1 +- 2.9 and 78.6 +- 19.9 against 21.9 +- 0.1 at lr 0.02; none diverged); with BN
8.1 +- 0.3% / 6.8 +- 0.2% / 23.8 +- 3.0% (running averages 8.1 +- 0.3%, 6.7 +- 0.2%, 24.2 +- 2.9%: after the anneal
recomputing changes little). "Higher rates": BN - no BN = -83.2 +- 0.2 points at lr 0.2 (95% interval -83.8
to -82.5) and -66.2 +- 3.0 points at lr 1.0 (-74.6 to -57.8), both beyond the 40-point min_effect:
reproduced. BN's best rate of the three is 0.2, 10x the plain net's; at 1.0 it still trains, more slowly.
"Faster" (lr 0.02): training loss averaged over the 8 epochs 1.498 +- 0.200 without BN, 0.518 +- 0.010 with
BN; BN - no BN = -0.980 +- 0.201 (95% interval -1.537 to -0.423): reproduced. The plain net first gets under
50% validation error (running statistics) in epoch 2 to 7 (seeds 0-4: 6, 5, 2, 4, 7), BN in epoch 1 to 2; BN's
final training loss is 0.077 +- 0.007 against 0.632 +- 0.190.
(b) Validation error at He x 0.1 / 1 / 10 (lr 0.02): without BN 90.0 +- 0.0% (stuck at ln 10: final training
loss 2.303, kernels barely move, norm 2.145) / 24.1 +- 4.0% / non-finite loss at step 1 on all 5 seeds
(counted as chance); with BN 7.5 +- 0.5% / 8.1 +- 0.3% / 36.0 +- 1.3%. Spread over the scales (max - min per
seed) 65.9 +- 4.0 points without BN, 28.6 +- 1.5 with BN; BN - no BN = -37.2 +- 4.6 points (95% interval
-50.1 to -24.3): "the init scale is less important" reproduced. It still matters with BN: He x 10 trains the
slowest (training loss 1.500 +- 0.045 averaged over the run, 0.763 +- 0.048 at the end; 3.9-4.5 in its first
epoch, above ln 10: the head, not normalised, is scaled too), and its conv kernels end at norm 214.6 +- 0.2, 10x the x 1
nets' 22.0, while He x 0.1's grow to 5.56 +- 0.05 (the plain x 0.1 nets' kernels, which barely move, end at
2.145): BN makes each conv's output independent of its kernel's scale, but not the size of the step relative
to that scale, which is what the init scale still sets.
Details: experiments/README.md.
"""
from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import finish_figure, first_epoch, machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits, standardize
from jaxnets import init, train

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, n_train=1024, n_val=500, pool=2,
    widths=(8, 16, 32), blocks_per_stage=4, activation="relu", input_mean=0.1307, input_std=0.3081,
    momentum=0.9, batch_size=32, epochs=8, schedule="cosine to 0", eval_batch=256, trained_val_error=0.5,
    evaluation="cosine-annealed rate (to 0), then BN statistics recomputed over the training digits",
    norms=("none", "batch"), lrs=(0.02, 0.2, 1.0),
    scale_lr=0.02, init_scales=(0.1, 1.0, 10.0),  # (b): He x scale, at lr scale_lr (one of lrs)
    chance_error=0.9,  # a diverged run's validation error in the verdicts
    min_effect={"higher_lr": 0.4, "faster": 0.0, "init_scale": 0.0},
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=4000, n_val=1000, pool=1, widths=(16, 32, 64),
                   blocks_per_stage=6, epochs=20, lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
                   init_scales=(0.01, 0.1, 1.0, 10.0, 100.0))
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=128, n_val=64, pool=4, widths=(4, 4, 4),
                   blocks_per_stage=1, epochs=1, lrs=(0.02, 0.2), init_scales=(1.0,), eval_batch=64)

NORM = {"none": None, "batch": "batch"}
LABEL = {"none": "no BN", "batch": "BN"}


def prepare(dataset: dict, config) -> dict:
    """uint8 [N, 28, 28, 1] -> standardised float32, average-pooled by ``pool`` to [N, 28/pool, 28/pool, 1]."""
    x = np.asarray(standardize(config["input_mean"], config["input_std"])(dataset["image"]))
    n, h, w, c = x.shape
    p = config["pool"]
    blocks = x.reshape(n, h // p, p, w // p, p, c)  # [N, H/p, p, W/p, p, C]: each p x p block, averaged below
    return {"image": blocks.mean(axis=(2, 4)).astype(np.float32), "label": np.asarray(dataset["label"])}


def conv_kernel_norm(params: dict) -> float:
    """L2 norm of all conv kernels together (the scale-invariant weights when BN follows them)."""
    return float(np.sqrt(sum(np.sum(np.square(np.asarray(p["kernel"], np.float64)))
                             for k, p in params.items() if k.startswith("Conv_"))))


def train_setting(config, norm: str, scale: float, lrs, train_set, val_set) -> list[dict]:
    """Every (peak lr, seed) of ``lrs`` x ``config["seeds"]`` for one network (BN or not, He x ``scale``), as
    one population (one compiled step); one row per member, measured after the cosine anneal."""
    started = time.perf_counter()
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"],
                    norm=NORM[norm], activation=config["activation"],
                    kernel_init=init.variance_scaling(2.0 * scale ** 2, mode="fan_in", distribution="normal"))
    steps = config["epochs"] * (len(train_set["label"]) // config["batch_size"])
    seeds, grid = list(config["seeds"]), {"learning_rate": [float(lr) for lr in lrs]}

    def optimizer(hp):  # the member's peak rate, annealed to 0 over the run
        return train.optimizer("sgd", learning_rate=train.schedules.cosine(hp["learning_rate"], steps),
                               momentum=config["momentum"])
    failure = None
    try:
        state, history = train.fit(
            model, train_set, val_data=val_set, epochs=config["epochs"], batch_size=config["batch_size"],
            seeds=seeds, hparams=grid, progress=False, optimizer=optimizer)
    except train.NonFiniteLossError as err:  # every member diverged: nothing to evaluate
        state, history, failure = None, err.history, err
    rows = []
    for r, member in enumerate(train.population_members(seeds, grid)):
        diverged = None if failure is None else {"step": failure.step, "epoch": failure.epoch}
        if history is not None and history.diverged is not None and history.diverged[r] is not None:
            diverged = history.diverged[r]
        curve = [] if history is None else [float(history.train_loss[e][r]) for e in range(len(history.train_loss))]
        running = [] if history is None else [float(history.val_error[e][r]) for e in range(len(history.val_error))]
        row = {"norm": norm, "init_scale": scale, "lr": member["learning_rate"], "seed": member["seed"],
               "steps": steps, "diverged": diverged, "train_loss": curve, "val_error_running": running}
        if diverged is None:
            one = train.unstack(state, r)
            recomputed = train.recompute_batch_stats(one, train_set, batch_size=config["eval_batch"])
            ev = train.evaluate(recomputed, val_set, batch_size=config["eval_batch"])
            row.update(val_error=1.0 - ev["accuracy"], val_loss=ev["loss"], final_train_loss=curve[-1],
                       mean_train_loss=float(np.mean(curve)), final_val_error_running=running[-1],
                       conv_kernel_norm_final=conv_kernel_norm(one.params),
                       first_epoch_under_50=first_epoch(running, config["trained_val_error"], strict=False))
        else:  # a diverged network classifies nothing: chance in the verdicts, nan in the losses
            row.update(val_error=config["chance_error"], val_loss=math.nan, final_train_loss=math.nan,
                       mean_train_loss=math.nan, final_val_error_running=math.nan, conv_kernel_norm_final=math.nan,
                       first_epoch_under_50=None)
        rows.append(row)
        print(f"{LABEL[norm]:5s} He x {scale:<4g} lr {row['lr']:<5g} seed {row['seed']}: "
              f"{'diverged at step ' + str(diverged['step']) if diverged else 'finished'}; train loss "
              f"{[round(v, 3) for v in curve]}; val error {row['val_error']:.3f} (running "
              f"{row['final_val_error_running']:.3f}); |conv kernels| {row['conv_kernel_norm_final']:.3g}", flush=True)
    print(f"  [{time.perf_counter() - started:.0f} s]", flush=True)
    return rows


def per_seed(runs, key, *, norm, lr, scale) -> list[float]:
    """``key`` of the runs of (norm, lr, scale), in the order of the seeds."""
    by_seed = {r["seed"]: r[key] for r in runs if (r["norm"], r["lr"], r["init_scale"]) == (norm, lr, scale)}
    return [float(by_seed[s]) for s in sorted(by_seed)]


def judge(name: str, metric: str, a: list, b: list, *, direction: str, min_effect: float, config, scale=100.0,
          unit=" points", digits=1, **extra) -> dict:
    """One claim's record: the paired difference BN - no BN, the min_effect and the verdict."""
    d = protocol.paired(a, b)
    verdict = protocol.verdict(d, direction=direction, min_effect=min_effect)
    print(f"{name}: {protocol.describe(d, scale=scale, unit=unit, digits=digits)} -> {verdict}", flush=True)
    return {"claim": name, "metric": metric, "difference": "BN - no BN, per seed", "seeds": list(config["seeds"]),
            "no_bn": a, "bn": b, "paired": d,
            "difference_text": protocol.describe(d, scale=scale, unit=unit, digits=digits),
            "direction": direction, "min_effect": min_effect, "verdict": verdict, **extra}


def main(config=CONFIG, *, out=None):
    """(a) a learning-rate sweep and (b) an init-scale sweep, each with and without BatchNorm, 5 paired seeds."""
    started = time.perf_counter()
    load_start = machine_load()
    if config["scale_lr"] not in config["lrs"] or 1.0 not in config["init_scales"]:
        raise ValueError(f"batchnorm_effect: scale_lr must be one of lrs and 1.0 one of init_scales (the run "
                         f"shared by both sweeps), got {config['scale_lr']} and {config['init_scales']}.")
    train_raw, val_raw = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    train_set, val_set = prepare(train_raw, config), prepare(val_raw, config)
    runs = []
    for norm in config["norms"]:
        runs += train_setting(config, norm, 1.0, config["lrs"], train_set, val_set)
        for scale in config["init_scales"]:
            if scale != 1.0:
                runs += train_setting(config, norm, scale, [config["scale_lr"]], train_set, val_set)
    summary = {"lr": {}, "init_scale": {}}
    for norm in config["norms"]:
        for sweep, settings in (("lr", [(lr, 1.0) for lr in config["lrs"]]),
                                ("init_scale", [(config["scale_lr"], s) for s in config["init_scales"]])):
            summary[sweep][LABEL[norm]] = {
                f"{sweep} {lr if sweep == 'lr' else s:g}": {
                    key: protocol.estimate(per_seed(runs, key, norm=norm, lr=lr, scale=s))
                    for key in ("val_error", "final_val_error_running", "final_train_loss", "mean_train_loss",
                                "conv_kernel_norm_final")}
                | {"diverged_seeds": sum(r["diverged"] is not None for r in runs
                                         if (r["norm"], r["lr"], r["init_scale"]) == (norm, lr, s))}
                for lr, s in settings}
    size = config["min_effect"]
    claims = {}
    for lr in config["lrs"]:
        if lr > config["scale_lr"]:
            claims[f"higher_lr_{lr:g}"] = judge(
                f"BN allows higher learning rates: at lr {lr:g} BN trains where the plain net does not",
                f"validation error after the anneal at peak lr {lr:g} (BN: recomputed statistics; diverged = chance)",
                per_seed(runs, "val_error", norm="none", lr=lr, scale=1.0),
                per_seed(runs, "val_error", norm="batch", lr=lr, scale=1.0), direction="lower",
                min_effect=size["higher_lr"], config=config,
                min_effect_source="a trained net (under 50%) against one at chance (90%); the notes give no number")
    lr = config["scale_lr"]
    claims["faster"] = judge(
        f"BN trains faster (lr {lr:g})", f"training loss averaged over the {config['epochs']} epochs at peak lr "
                                         f"{lr:g} (the area under the training curve)",
        per_seed(runs, "mean_train_loss", norm="none", lr=lr, scale=1.0),
        per_seed(runs, "mean_train_loss", norm="batch", lr=lr, scale=1.0), direction="lower",
        min_effect=size["faster"], config=config, scale=1.0, unit="", digits=3,
        min_effect_source="the notes give no size: 0")

    def spread(norm):
        per_scale = np.array([per_seed(runs, "val_error", norm=norm, lr=lr, scale=s) for s in config["init_scales"]])
        return list(per_scale.max(axis=0) - per_scale.min(axis=0))

    claims["init_scale"] = judge(
        "BN makes the init scale less important",
        f"per seed, max - min over He x {', '.join(f'{s:g}' for s in config['init_scales'])} of the validation "
        f"error after the anneal at lr {lr:g} (BN: recomputed statistics; diverged = chance)",
        spread("none"), spread("batch"), direction="lower", min_effect=size["init_scale"], config=config,
        min_effect_source="the notes give no size: 0")
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]),
               "image_shape": list(train_set["image"].shape[1:]), "summary": summary, "claims": claims,
               "runs": runs, "machine_start": load_start, "machine_end": machine_load()}
    figures = {"lr_sweep": plot_lr(runs, config), "init_scale": plot_scale(runs, config)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def _curves(ax, runs, config, *, norm, lr, scale, color, label):
    """Training loss per epoch (mean +- sem band over the seeds; a diverged seed is left out from its epoch)."""
    rows = [r for r in runs if (r["norm"], r["lr"], r["init_scale"]) == (norm, lr, scale)]
    curves = np.full((len(rows), config["epochs"]), np.nan)
    for i, r in enumerate(rows):
        curves[i, :len(r["train_loss"])] = r["train_loss"]
    diverged = sum(r["diverged"] is not None for r in rows)
    extra = f" ({diverged}/{len(rows)} diverged)" if diverged else ""
    protocol.band(ax, np.arange(1, config["epochs"] + 1), np.minimum(curves, 3.0), color=color, marker="o", ms=3,
                  label=label + extra)


def _final(ax, runs, config, xs, settings, *, norm, color, marker="o", key="val_error", label=None, ls="-"):
    """Final validation error (%) against the swept value, mean +- sem error bars, and every seed as a dot."""
    values = np.array([per_seed(runs, key, norm=norm, lr=lr, scale=s) for lr, s in settings])  # [settings, seeds]
    est = [protocol.estimate(v) for v in values]
    ax.errorbar(xs, [100 * e["mean"] for e in est], yerr=[100 * e["sem"] for e in est], fmt=marker + ls,
                color=color, capsize=4, label=label)
    for x, v in zip(xs, values):
        ax.plot([x] * len(v), 100 * v, ".", color=color, alpha=0.35)


def plot_lr(runs, config):
    norms = config["norms"]
    fig, axes = plt.subplots(1, 1 + len(norms), figsize=(6 + 5.5 * len(norms), 4.8))
    settings = [(lr, 1.0) for lr in config["lrs"]]
    for i, norm in enumerate(norms):
        _final(axes[0], runs, config, config["lrs"], settings, norm=norm, color=f"C{i}",
               label=f"{LABEL[norm]}" + (" (recomputed statistics)" if norm == "batch" else ""))
        if norm == "batch":
            _final(axes[0], runs, config, config["lrs"], settings, norm=norm, color=f"C{i}", marker="s", ls="--",
                   key="final_val_error_running", label="BN (running averages)")
        cmap = plt.get_cmap("plasma")
        for j, lr in enumerate(config["lrs"]):
            _curves(axes[1 + i], runs, config, norm=norm, lr=lr, scale=1.0,
                    color=cmap(j / max(len(config["lrs"]) - 1, 1) * 0.85), label=f"peak lr {lr:g}")
        axes[1 + i].axhline(np.log(10), color="k", ls=":", lw=1)
        axes[1 + i].set(title=f"{LABEL[norm]}: training loss (mean +- sem)", xlabel="epoch",
                        ylabel="training loss (epoch mean, capped at 3)", ylim=(0, 3.1))
    axes[0].axhline(100 * config["chance_error"], color="k", ls=":", lw=1, label="chance (and diverged)")
    axes[0].set(xscale="log", xlabel="peak learning rate (SGD momentum 0.9, cosine to 0)", ylim=(0, 100),
                ylabel="validation error after the anneal (%)",
                title="final validation error (mean +- sem; dots: seeds)")
    axes[0].minorticks_off()
    axes[0].set_xticks(config["lrs"], [f"{lr:g}" for lr in config["lrs"]])
    side = 28 // config["pool"]
    return finish_figure(fig, axes, legend={"fontsize": 8},
                         suptitle=f"{2 + 3 * config['blocks_per_stage']}-layer plain CNN, He init, "
                                  f"{config['n_train']} MNIST digits at {side} x {side}, batch {config['batch_size']}, "
                                  f"{config['epochs']} epochs, {len(config['seeds'])} paired seeds")


def plot_scale(runs, config):
    norms, lr = config["norms"], config["scale_lr"]
    fig, axes = plt.subplots(1, 1 + len(norms), figsize=(6 + 5.5 * len(norms), 4.8))
    settings = [(lr, s) for s in config["init_scales"]]
    for i, norm in enumerate(norms):
        _final(axes[0], runs, config, config["init_scales"], settings, norm=norm, color=f"C{i}", label=LABEL[norm])
        for j, s in enumerate(config["init_scales"]):
            _curves(axes[1 + i], runs, config, norm=norm, lr=lr, scale=s, color=f"C{j + 2}", label=f"He x {s:g}")
        axes[1 + i].axhline(np.log(10), color="k", ls=":", lw=1)
        axes[1 + i].set(title=f"{LABEL[norm]}: training loss at lr {lr:g} (mean +- sem)", xlabel="epoch",
                        ylabel="training loss (epoch mean, capped at 3)", ylim=(0, 3.1))
    axes[0].axhline(100 * config["chance_error"], color="k", ls=":", lw=1, label="chance (and diverged)")
    axes[0].set(xscale="log", xlabel="init scale (kernels from He x scale)", ylim=(0, 100),
                ylabel="validation error after the anneal (%)", title=f"final validation error at lr {lr:g}")
    axes[0].minorticks_off()
    axes[0].set_xticks(config["init_scales"], [f"{s:g}" for s in config["init_scales"]])
    return finish_figure(fig, axes, legend={"fontsize": 8})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
