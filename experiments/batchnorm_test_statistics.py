"""BatchNorm at test time: running averages vs recomputed population statistics, and BN folded into the convs.

Claims (/work/shared/reference/000_3cfbcdab51860f78.txt, Definition 6.48 "BN during Testing": two strategies,
(1) after training, evaluate the fixed network on the training set and compute the statistics layer by layer,
(2) running averages during training, PyTorch's default; Concept 6.51: "After training, functionality of BN
can be absorbed into the previous layer when the previous layer is a linear layer or a conv layer";
004_ed4cfd944757b1b5.txt: at test time "BN becomes a deterministic linear transformation, which can also be
fused with the previous fully connected or convolutional operation", "No overhead at test-time"). Expected:
population statistics are at least as good as running averages, and better where the running averages are
poor (early in training: with momentum 0.1 the running mean after t steps still holds 0.9^t of its initial
value 0, the variance 0.9^t of 1; and with a large constant learning rate they average statistics of
parameters that have since moved); the folded network gives the same predictions and is faster.

Setup: ``experiments._nets.ConvNet(norm="batch")`` (plain, 4 conv + BN + ReLU, widths 16-32-64, BN momentum
0.1) trained with SGD (momentum 0.9, CONSTANT lr 0.05, batch 32) on a stratified 2,050 of the MNIST sample's
training digits, with ``make_train_step`` in a plain loop so the state can be examined after 1, 3, 10, 30,
100, 300 and 600 steps. At each checkpoint, on the 1,000 held-out digits: evaluation-mode error with the
running averages, and with population statistics recomputed over the 2,050 training digits
(``jaxnets.train.recompute_batch_stats``: exact, layer by layer, eval mode); and how far the running
statistics are from the population ones (per layer, mean over channels of ``|running - population|`` in
units of the population std for the mean, and of ``|log(var_running / var_population)|`` for the variance).

Folding: at the last checkpoint every conv + BN pair is replaced by one conv with a bias
(``jaxnets.layers.fold_batch_norm``), giving the parameters of the same ConvNet with ``norm=None``. Compared
with the unfolded network in evaluation mode on the 1,000 held-out digits: max |logit difference| and argmax
agreement (for the running and the recomputed statistics). Inference speed, images/s of the jitted forward
pass (parameters passed as arguments, so XLA cannot fold them itself) at batch 1, 32 and 1,000: warm-up calls
excluded, each call timed to ``block_until_ready``, the two networks measured alternately, median of the
repeats.

Run: python -m experiments.batchnorm_test_statistics  ->  experiments/results/batchnorm_test_statistics/
Result (default config, one seed, 66 s wall on a quiet 2-core CPU): recomputing matters early and still
helps at the end. Validation error, running averages -> recomputed: after 10 steps 90.0% -> 80.2%, 30 steps
86.2% -> 65.1%, 100 steps 23.7% -> 14.0%, 300 steps 4.9% -> 5.1% (a tie within noise), 600 steps 6.1% -> 3.4%
(training digits in eval mode at 600 steps: 1.0% -> 0.3%); between 300 and 600 steps the running averages got
worse while the recomputed statistics improved. The running variances are off by a factor e^2.9 in the first
BN layer after 10 steps (mean |log ratio| 2.9) and still by 4-6% at 600 steps (constant lr: the parameters
keep moving). Folding: max |logit difference| 6.7e-6 (running) and 7.6e-6 (recomputed) on logits up to 23,
argmax agreement 100% of 1,000; the folded net drops 256 BN parameters and is at most modestly faster:
median images/s 1,667 -> 1,834 (x1.10) at batch 1, 4,269 -> 4,653 (x1.09) at batch 32, 4,001 -> 4,393
(x1.10) at batch 1,000; best-of-repeats ratios only x1.02, x1.05 and x0.96 (slower). Details:
experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, layers, train

CONFIG = dict(
    preset="default", seed=0, n_train=2048, n_val=1000, widths=(16, 32, 64), batch_size=32, lr=0.05,
    momentum=0.9, checkpoints=(1, 3, 10, 30, 100, 300, 600), eval_batch=250,
    speed_batches=(1, 32, 1000), speed_warmup=3, speed_repeats=(200, 50, 10),
)
# The whole MNIST sample (4,000 / 1,000), a wider net, training to 5,000 steps; speed on larger batches.
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, n_val=None, widths=(64, 128, 256),
                   checkpoints=(1, 3, 10, 30, 100, 300, 1000, 3000, 5000), speed_batches=(1, 32, 256, 1000),
                   speed_repeats=(200, 100, 30, 10))
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=64, n_val=64, widths=(4, 8), batch_size=16, checkpoints=(1, 3),
                   eval_batch=64, speed_batches=(1, 64), speed_warmup=1, speed_repeats=(3, 3))


def stats_gap(running: dict, population: dict) -> dict:
    """Per BN layer: mean over channels of |mean_run - mean_pop| / std_pop and of |log(var_run / var_pop)|."""
    out = {}
    for name in sorted(population, key=lambda n: int(n.rsplit("_", 1)[1])):
        r, p = running[name], population[name]
        std = jnp.sqrt(p["var"])
        out[name] = {"mean": float(jnp.mean(jnp.abs(r["mean"] - p["mean"]) / std)),
                     "log_var": float(jnp.mean(jnp.abs(jnp.log(r["var"] / p["var"]))))}
    return out


def fold_convnet(params: dict, batch_stats: dict) -> dict:
    """Parameters of ``ConvNet(norm=None)`` equal (in eval mode) to a plain ``ConvNet(norm="batch")``: in
    that net ``Conv_i`` feeds ``BatchNorm_i`` (created in pairs), and each pair becomes one conv with a bias."""
    convs = sorted(k for k in params if k.startswith("Conv_"))
    if sorted(f"Conv_{k.split('_')[1]}" for k in batch_stats) != convs:
        raise ValueError(f"fold_convnet: expected one BatchNorm_i per Conv_i, got {sorted(params)}.")
    folded = {k: v for k, v in params.items() if not k.startswith(("Conv_", "BatchNorm_"))}
    for conv in convs:
        bn = "BatchNorm_" + conv.split("_")[1]
        kernel, bias = layers.fold_batch_norm(params[conv]["kernel"], None, params[bn], batch_stats[bn])
        folded[conv] = {"kernel": kernel, "bias": bias}
    return folded


def compare_folded(model, folded_model, variables, folded_params, images) -> dict:
    """Max |logit difference| and argmax agreement of the BN net (eval mode) and the folded one."""
    a = model.apply(variables, images, train=False)
    b = folded_model.apply({"params": folded_params}, images, train=False)
    return {"max_abs_logit_diff": float(jnp.max(jnp.abs(a - b))),
            "max_abs_logit": float(jnp.max(jnp.abs(a))),
            "argmax_agreement": float(jnp.mean(jnp.argmax(a, -1) == jnp.argmax(b, -1)))}


def time_inference(fns: dict, args: dict, images, *, batch: int, warmup: int, repeats: int) -> dict:
    """Images/s of each jitted ``fn(args, x)`` on ``batch`` images: ``warmup`` calls first (compilation
    included), then ``repeats`` rounds, each timing every network once (alternating), to block_until_ready."""
    x = images[:batch]
    for name, fn in fns.items():
        for _ in range(warmup):
            fn(args[name], x).block_until_ready()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(args[name], x).block_until_ready()
            times[name].append(time.perf_counter() - t)
    out = {}
    for name, ts in times.items():
        med = float(np.median(ts))
        out[name] = {"median_s": med, "min_s": float(np.min(ts)), "images_per_sec": batch / med,
                     "best_images_per_sec": batch / float(np.min(ts))}
    out["speedup_median"] = out["unfolded"]["median_s"] / out["folded"]["median_s"]
    return out


def main(config=CONFIG, *, out=None):
    """Running vs recomputed BN statistics along training; folded vs unfolded predictions and speed."""
    started = time.perf_counter()
    train_set, val = mnist_splits(config["n_train"], config["n_val"], seed=config["seed"])
    model = ConvNet(widths=tuple(config["widths"]), norm="batch")
    tx = train.optimizer("sgd", learning_rate=config["lr"], momentum=config["momentum"])
    state = train.TrainState.create(model, tx, train_set["image"][:1], config["seed"])
    step_fn = jax.jit(train.make_train_step())
    batches = data.Batches(train_set, config["batch_size"], seed=config["seed"])

    checkpoints, rows, epoch, recomputed = sorted(config["checkpoints"]), [], 0, None
    while int(state.step) < checkpoints[-1]:
        for batch in batches.epoch(epoch):
            state, _ = step_fn(state, batch)
            step = int(state.step)
            if step in checkpoints:
                recomputed = train.recompute_batch_stats(state, train_set, batch_size=config["eval_batch"])
                row = {"step": step, "examples_seen": step * config["batch_size"],
                       "val_error_running": 1 - train.evaluate(state, val, batch_size=config["eval_batch"])["accuracy"],
                       "val_error_recomputed": 1 - train.evaluate(recomputed, val,
                                                                  batch_size=config["eval_batch"])["accuracy"],
                       "train_error_running": 1 - train.evaluate(state, train_set,
                                                                 batch_size=config["eval_batch"])["accuracy"],
                       "train_error_recomputed": 1 - train.evaluate(recomputed, train_set,
                                                                    batch_size=config["eval_batch"])["accuracy"],
                       "stats_gap": stats_gap(state.batch_stats, recomputed.batch_stats)}
                rows.append(row)
                gap = np.mean([g["log_var"] for g in row["stats_gap"].values()])
                print(f"step {step:5d}: val err running {row['val_error_running']:.3f} recomputed "
                      f"{row['val_error_recomputed']:.3f} | mean |log var ratio| {gap:.3f} "
                      f"[{time.perf_counter() - started:.0f} s]", flush=True)
            if step >= checkpoints[-1]:
                break
        epoch += 1

    # Folding, at the last checkpoint, with both sets of statistics.
    folded_model = ConvNet(widths=tuple(config["widths"]), norm=None)
    images = data.augment.to_float(jnp.asarray(val["image"]))
    folding = {}
    for which, s in (("running", state), ("recomputed", recomputed)):
        folded = fold_convnet(s.params, s.batch_stats)
        folding[which] = compare_folded(model, folded_model, s.variables, folded, images)
        print(f"folded ({which} stats): {folding[which]}", flush=True)
    fns = {"unfolded": jax.jit(lambda v, x: model.apply(v, x, train=False)),
           "folded": jax.jit(lambda p, x: folded_model.apply({"params": p}, x, train=False))}
    args = {"unfolded": recomputed.variables, "folded": fold_convnet(recomputed.params, recomputed.batch_stats)}
    speed = {}
    for batch, repeats in zip(config["speed_batches"], config["speed_repeats"]):
        speed[f"batch_{batch}"] = time_inference(fns, args, images, batch=batch, warmup=config["speed_warmup"],
                                                 repeats=repeats)
        r = speed[f"batch_{batch}"]
        print(f"batch {batch:5d}: unfolded {r['unfolded']['images_per_sec']:9.0f} img/s, folded "
              f"{r['folded']['images_per_sec']:9.0f} img/s, speedup x{r['speedup_median']:.2f}", flush=True)
    n_bn = sum(v["scale"].size * 2 for k, v in state.params.items() if k.startswith("BatchNorm_"))
    results = {"n_train": len(train_set["label"]), "n_val": len(val["label"]), "checkpoints": rows,
               "folding": folding, "inference_speed": speed, "bn_parameters_removed_by_folding": n_bn}
    figures = {"running_vs_recomputed": plot_stats(rows, config), "folding_speed": plot_speed(speed, folding)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def plot_stats(rows: list[dict], config) -> plt.Figure:
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r["step"] for r in rows]
    ax.plot(steps, [100 * r["val_error_running"] for r in rows], "o-", color="C0", label="val, running averages")
    ax.plot(steps, [100 * r["val_error_recomputed"] for r in rows], "s-", color="C3", label="val, recomputed")
    ax.plot(steps, [100 * r["train_error_running"] for r in rows], "o:", color="C0", alpha=0.6,
            label="train (eval mode), running")
    ax.plot(steps, [100 * r["train_error_recomputed"] for r in rows], "s:", color="C3", alpha=0.6,
            label="train (eval mode), recomputed")
    ax.set(xscale="log", xlabel="training steps (batch %d, constant lr %g)" % (config["batch_size"], config["lr"]),
           ylabel="error (%)", title="evaluation-mode error with each set of statistics")
    layers_ = sorted(rows[0]["stats_gap"], key=lambda n: int(n.rsplit("_", 1)[1]))
    for i, name in enumerate(layers_):
        ax_gap.plot(steps, [r["stats_gap"][name]["log_var"] for r in rows], "o-", color=f"C{i}",
                    label=f"{name}: |log var ratio|")
        ax_gap.plot(steps, [r["stats_gap"][name]["mean"] for r in rows], "x--", color=f"C{i}",
                    label=f"{name}: |mean diff| / std")
    ax_gap.set(xscale="log", yscale="log", xlabel="training steps",
               ylabel="running vs population (channel mean)", title="how far the running statistics are off")
    for a in (ax, ax_gap):
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_speed(speed: dict, folding: dict) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(speed)
    x = np.arange(len(names))
    for off, net, color in ((-0.2, "unfolded", "C0"), (0.2, "folded", "C2")):
        ax.bar(x + off, [speed[n][net]["images_per_sec"] for n in names], 0.4, color=color,
               label=f"{net} (conv + BN)" if net == "unfolded" else "folded (conv with bias)")
    for i, n in enumerate(names):
        ax.text(i, max(speed[n]["unfolded"]["images_per_sec"], speed[n]["folded"]["images_per_sec"]),
                f"x{speed[n]['speedup_median']:.2f}", ha="center", va="bottom")
    ax.set_xticks(x, [n.replace("_", " ") for n in names])
    ax.set(ylabel="images/s (median of repeats)",
           title="eval-mode inference, jitted; max |logit diff| %.1e, agreement %.1f%%"
                 % (folding["recomputed"]["max_abs_logit_diff"], 100 * folding["recomputed"]["argmax_agreement"]))
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
