"""Does BatchNorm degrade at small batch sizes where GroupNorm does not (Wu & He 2018)?

Claim (/work/shared/reference/002_de9ed5bb46c1eb74.txt, "Batchnorm drawback: sensitivity to batch size" and
"Group Normalization - conclusions": "GN is insensitive to mini-batch size. For smaller mini-batches GN
outperforms BN significantly"; 004_ed4cfd944757b1b5.txt: BN "does not scale down to micro-batches";
000_3cfbcdab51860f78.txt, Concept 6.49: "With BN, the choice of batch size becomes a more important
hyperparameter"). BN normalises each channel with the mean and variance of the current batch; with B
examples these are noisy estimates, and at test time the network sees the running averages of them instead,
so the smaller B, the larger the mismatch between training and test. GN normalises each example on its own
(groups of channels), so it computes the same thing at any batch size and in training and test.

Setup: ``experiments._nets.ConvNet`` (plain, 4 convs, widths 8-16-32, ReLU) with ``norm="batch"`` and with
``norm="group"`` (4 groups), nothing else changed, trained on a stratified 2,050 of the MNIST sample's 4,000
training digits at B = 2, 4, 8, 32, 128. Every run sees the same number of examples (same epochs), with SGD
(momentum 0.9) and the learning rate scaled LINEARLY with the batch size, ``lr = 0.1 * B / 32`` (Goyal et
al. 2017, the rule Wu & He use), cosine-annealed to 0. Linear scaling keeps the expected parameter change per
example seen the same for every B, so the runs are comparable without a separate search per size (which this
CPU budget cannot afford at 10 runs). Measured on the 1,000 held-out digits:
  - ``val_error_eval``: evaluation mode, BN with its RUNNING statistics (momentum 0.1): what a deployed
    model does, and where small batches should hurt most;
  - ``val_error_recomputed`` (BN only): evaluation mode with population statistics recomputed over the
    training set after training (``jaxnets.train.recompute_batch_stats``): separates "the running averages are
    off" from "the network itself is worse";
  - ``val_error_train_mode`` (BN only): training mode on shuffled validation batches of the SAME size B
    (statistics of B examples, as during training);
  - the training loss and error of the last epoch (as the batches ran, training mode).
GN has no statistics to keep, so its three validation numbers coincide (only ``val_error_eval`` is reported).

Run: python -m experiments.batchnorm_batch_size  ->  experiments/results/batchnorm_batch_size/
Result (default config, one seed, 124 s wall on a quiet 2-core CPU): BN degrades at the smallest batch:
validation error (eval mode, running averages) 9.4% at B = 2 against 5.3%, 5.9%, 6.5% at B = 4, 8, 32.
Recomputed population statistics give nearly the same (8.5%, 4.8%, 6.2%, 6.6%), and training mode on batches
of B validation digits is WORSE (24.3%, 14.4%, 11.1%, 8.1%): at B = 2 the harm is in training (the network
learned under noisy batch statistics: training loss 0.89 vs 0.45 at B = 4 and 0.21 at B = 32), not in the
running averages. GroupNorm does not degrade at small batches: its best run is B = 2 (13.9%; 18.3%, 20.7%,
26.2%, 80.4% at B = 4 ... 128), but GN trains much more slowly than BN in this net and budget (it needs steps,
and larger batches get fewer: 4,100 steps at B = 2, 64 at B = 128), so it never beats BN here, even at B = 2.
At B = 128 (64 steps) both are step-starved (BN 19.1%, running averages off after 64 steps at lr 0.4:
recomputed 15.0%). Details: experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import data, layers, train

CONFIG = dict(
    preset="default", seed=0, dataset="mnist_sample", data_root=None, n_train=2048, n_val=1000,
    widths=(8, 16, 32), blocks_per_stage=1, groups=4, norms=("batch", "group"), batch_sizes=(2, 4, 8, 32, 128),
    epochs=4, base_lr=0.1, base_batch=32, momentum=0.9, eval_batch=250,
)
# CIFAR-10 (data.load_cifar10(data_root) must find it, e.g. data_root="data" holding data/cifar10/...): all
# 50,000 training and 10,000 test images, wider net, 30 epochs.
FULL_CONFIG = dict(CONFIG, preset="full", dataset="cifar10", data_root="data", n_train=None, n_val=None,
                   widths=(64, 128, 256), groups=32, blocks_per_stage=2, batch_sizes=(2, 4, 8, 16, 32, 64, 128),
                   epochs=30)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=64, n_val=64, widths=(4, 8), batch_sizes=(8,), epochs=1,
                   eval_batch=32)


def load_splits(config) -> tuple[dict, dict]:
    """(train, val) for ``config["dataset"]``: the MNIST sample (``n_train`` / ``n_val`` of it) or CIFAR-10
    (training and test sets; ``load_cifar10`` raises a clear error when ``data_root`` lacks it)."""
    if config["dataset"] == "cifar10":
        return data.load_cifar10(config["data_root"])
    return mnist_splits(config["n_train"], config["n_val"], seed=config["seed"])


def train_mode_error(state, val: dict, batch_size: int, seed: int) -> float:
    """Validation error in TRAINING mode: shuffled batches of ``batch_size`` normalised with their own
    statistics (the running averages are not touched); the incomplete last batch is dropped."""
    order = np.random.default_rng(seed).permutation(len(val["label"]))  # val is stored sorted by label
    nb = len(order) // batch_size
    keep = order[:nb * batch_size]
    images = jnp.asarray(val["image"][keep]).reshape(nb, batch_size, *val["image"].shape[1:])
    labels = jnp.asarray(val["label"][keep]).reshape(nb, batch_size)

    @jax.jit
    def correct(variables, images, labels):
        def one(batch):
            x, y = batch
            logits, _ = state.apply_fn(variables, data.augment.to_float(x), train=True, mutable=["batch_stats"])
            return layers.accuracy(logits, y) * y.shape[0]
        return jnp.sum(jax.lax.map(one, (images, labels)))

    return 1.0 - float(correct(state.variables, images, labels)) / len(keep)


def train_one(config, train_set, val, norm: str, batch_size: int) -> dict:
    """Train one network at one batch size and measure it (see the module docstring)."""
    start = time.perf_counter()
    model = ConvNet(widths=tuple(config["widths"]), norm=norm, groups=config["groups"],
                    blocks_per_stage=config["blocks_per_stage"])
    steps = len(train_set["label"]) // batch_size * config["epochs"]
    lr = config["base_lr"] * batch_size / config["base_batch"]  # linear scaling rule
    tx = train.optimizer("sgd", learning_rate=train.schedules.cosine(lr, steps), momentum=config["momentum"])
    state, history = train.fit(model, train_set, epochs=config["epochs"], batch_size=batch_size, optimizer=tx,
                               seed=config["seed"], progress=False)
    row = {"norm": norm, "batch_size": batch_size, "lr": lr, "steps": steps,
           "train_loss": history.train_loss, "train_error": history.train_error,
           "val_error_eval": 1.0 - train.evaluate(state, val, batch_size=config["eval_batch"])["accuracy"],
           "train_images_per_sec": history.images_per_sec}
    if norm == "batch":
        recomputed = train.recompute_batch_stats(state, train_set, batch_size=config["eval_batch"])
        row["val_error_recomputed"] = 1.0 - train.evaluate(recomputed, val, batch_size=config["eval_batch"])["accuracy"]
        row["val_error_train_mode"] = train_mode_error(state, val, batch_size, config["seed"])
    row["seconds"] = time.perf_counter() - start
    extra = "".join(f" {k[10:]} {row[k]:.3f}" for k in ("val_error_recomputed", "val_error_train_mode") if k in row)
    print(f"{norm:5s} B={batch_size:4d} lr={lr:.4f} steps={steps:5d} train loss {row['train_loss'][-1]:.3f} "
          f"err {row['train_error'][-1]:.3f} | val err eval {row['val_error_eval']:.3f}{extra} "
          f"[{row['seconds']:.0f} s]", flush=True)
    return row


def main(config=CONFIG, *, out=None):
    """BN vs GN validation error against batch size, at equal examples seen and linearly scaled rates."""
    started = time.perf_counter()
    train_set, val = load_splits(config)
    rows = [train_one(config, train_set, val, norm, b) for norm in config["norms"] for b in config["batch_sizes"]]
    by = {(r["norm"], r["batch_size"]): r for r in rows}
    sizes = sorted(config["batch_sizes"])
    summary = {}
    if "batch" in config["norms"] and "group" in config["norms"]:
        summary = {f"B={b}": {"bn_eval": by["batch", b]["val_error_eval"],
                              "bn_recomputed": by["batch", b]["val_error_recomputed"],
                              "bn_train_mode": by["batch", b]["val_error_train_mode"],
                              "gn": by["group", b]["val_error_eval"]} for b in sizes}
        print(summary)
    results = {"n_train": len(train_set["label"]), "n_val": len(val["label"]), "runs": rows, "summary": summary}
    return write_results(__file__, config, results, figures={"error_vs_batch_size": plot(rows, config)},
                         out=out, started=started)


def plot(rows: list[dict], config) -> plt.Figure:
    fig, (ax, ax_train) = plt.subplots(1, 2, figsize=(12, 4.5))
    curves = [("batch", "val_error_eval", "BN, eval mode (running averages)", "C0", "o-"),
              ("batch", "val_error_recomputed", "BN, eval mode (recomputed population stats)", "C0", "s--"),
              ("batch", "val_error_train_mode", "BN, train mode (batch stats of B val examples)", "C0", "^:"),
              ("group", "val_error_eval", "GroupNorm", "C3", "o-")]
    for norm, key, label, color, style in curves:
        pts = [(r["batch_size"], 100 * r[key]) for r in rows if r["norm"] == norm and key in r]
        if pts:
            ax.plot(*zip(*pts), style, color=color, label=label)
    for norm, label, color in (("batch", "BN", "C0"), ("group", "GroupNorm", "C3")):
        pts = [(r["batch_size"], 100 * r["train_error"][-1]) for r in rows if r["norm"] == norm]
        if pts:
            ax_train.plot(*zip(*pts), "o-", color=color, label=label)
    for a, title in ((ax, "validation error"), (ax_train, "training error, last epoch (train mode)")):
        a.set(xscale="log", xlabel="batch size B (lr = %g B / %d)" % (config["base_lr"], config["base_batch"]),
              ylabel="error (%)", title=title)
        a.set_xticks(sorted(config["batch_sizes"]), [str(b) for b in sorted(config["batch_sizes"])])
    return finish_figure(fig, (ax, ax_train), legend={"fontsize": 8},
                         suptitle=f"BatchNorm vs GroupNorm across batch sizes: {config['dataset']}, "
                                  f"{config['epochs']} epochs for every B, widths {tuple(config['widths'])}")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
