"""Training BatchNorm and only BatchNorm (Frankle, Schwab & Morcos 2020): how far do the BN scales and biases of
a RANDOM network get on their own?

Claim (/work/shared/reference/000_3cfbcdab51860f78.txt, Concept 6.50 "BN has trainable parameters": "if one
randomly initializes a CNN, freezes all other parameters, and only train BN parameters, the performance is
surprisingly good"): with every conv and the output layer frozen at their random initial values, training
only the per-channel scale gamma and shift beta of each BN layer reaches accuracy far above chance (Frankle et
al.: up to 82% on CIFAR-10 with a very deep ResNet, training well under 1% of the parameters, the output layer
frozen too). Compared here with training everything and with training only the output layer (a linear
classifier on the random network's features, with a similar number of parameters).

Setup: ``experiments._nets.ConvNet(residual=True, norm="batch")``: a small ResNet (stem conv, one residual
block per stage at widths 8-16-32, 1x1 projection shortcuts, 9 BN layers, global average pooling, dense
head; 19,810 parameters), initialised with PyTorch's default (``init.pytorch_default``), trained on a
stratified 2,050 of the MNIST sample's training digits for 5 epochs (batch 32, 320 steps), tested on the 1,000
held-out digits. For a given seed the runs start from the SAME random initialisation and see the same
batches; they differ only in what the optimizer may change (``jaxnets.train.optimizer(...,
trainable=predicate)``: frozen parameters get an update of exactly -0.0 and no optimizer state; the script
checks that only the trainable leaves changed):
  - ``all``: every parameter;
  - ``bn_only``: the BN ``scale`` and ``bias`` (gamma, beta) only; convs and the dense head stay random;
  - ``last_layer``: the dense head only (a linear classifier on the random network's pooled features, which
    its BN layers still normalise with batch statistics, gamma = 1, beta = 0).
In every run the BN running statistics are updated in training mode (they are buffers, not parameters), and
the evaluation uses them. Optimizer: Adam, cosine-annealed to 0. Learning rate 1e-2 for ``all`` and 1e-1 for
the two frozen-network runs: with the head frozen at its small random weights, a confident logit needs the few
trainable parameters to move far (a BN scale from 1 to ~10), which 320 Adam steps of 1e-2 cannot do (a trial
run at 1e-2 reached 33% for ``bn_only`` and 44% for ``last_layer``, with the training loss still at 2.1 and
1.9); 1e-1 is too large for training everything. The frozen-network runs are repeated with two seeds (two
random networks); training everything (far from the others) once. Chance is 10%.

Run: python -m experiments.batchnorm_only  ->  experiments/results/batchnorm_only/
Result (default config, 54 s wall on a quiet 2-core CPU): training only the 336 BN scales and biases (1.7% of
19,810 parameters) reaches 55.3% and 52.8% validation accuracy (two random networks; chance 10%, untrained
10.0%), training only the 330 parameters of the dense head 58.2% and 53.0%, training everything 97.3%. Far
above chance, as claimed, but in this small, shallow network and short run BN-only does not beat a linear
classifier on the same random features (mean 54.0% vs 55.6%; behind on both networks, by 2.9 and 0.2 points;
the seed-to-seed spread is larger than the mean gap); both frozen runs underfit (training accuracy 54-62%).
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import train

CONFIG = dict(
    preset="default", data_seed=0, n_train=2048, n_val=1000, widths=(8, 16, 32), blocks_per_stage=1,
    modes=("all", "bn_only", "last_layer"), seeds={"all": (0,), "bn_only": (0, 1), "last_layer": (0, 1)},
    optimizer="adam", lr={"all": 1e-2, "bn_only": 1e-1, "last_layer": 1e-1}, batch_size=32, epochs=5,
)
# Deeper and wider (Frankle et al.: BN-only accuracy grows with depth and width), the whole MNIST sample.
FULL_CONFIG = dict(CONFIG, preset="full", seeds={m: (0, 1, 2) for m in CONFIG["modes"]}, n_train=None, n_val=None,
                   widths=(64, 128, 256), blocks_per_stage=4, epochs=30)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds={m: (0,) for m in CONFIG["modes"]}, n_train=64, n_val=64,
                   widths=(4, 8), epochs=1)


def is_bn(path: tuple, _param) -> bool:
    """A BatchNorm scale or bias, e.g. ``("BatchNorm_3", "scale")``."""
    return path[-2].startswith("BatchNorm_") and path[-1] in ("scale", "bias")


def is_head(path: tuple, _param) -> bool:
    """The dense output layer, ``("Dense_0", "kernel" | "bias")``."""
    return path[0] == "Dense_0"


TRAINABLE = {"all": None, "bn_only": is_bn, "last_layer": is_head}


def count(params, predicate) -> int:
    """Number of parameters (scalars) for which ``predicate(path, param)`` holds (all when None)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return int(sum(p.size for path, p in leaves if predicate is None or predicate(train.path_names(path), p)))


def main(config=CONFIG, *, out=None):
    """Validation accuracy of training everything, only the BN parameters, or only the dense head."""
    started = time.perf_counter()
    train_set, val = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"],
                    residual=True, norm="batch")
    steps = len(train_set["label"]) // config["batch_size"] * config["epochs"]
    rows = []
    for mode in config["modes"]:
        for seed in config["seeds"][mode]:
            start = time.perf_counter()
            tx = train.optimizer(config["optimizer"], learning_rate=train.schedules.cosine(config["lr"][mode], steps),
                                 trainable=TRAINABLE[mode])
            initial = train.TrainState.create(model, tx, train_set["image"][:1], seed)
            state, history = train.fit(model, train_set, val_data=val, epochs=config["epochs"],
                                       batch_size=config["batch_size"], optimizer=tx, seed=seed, progress=False)
            changed = sum(int(a.size) for a, b in zip(jax.tree.leaves(initial.params), jax.tree.leaves(state.params))
                          if bool((a != b).any()))  # a check that the freezing held
            row = {"seed": seed, "mode": mode, "trainable_params": count(state.params, TRAINABLE[mode]),
                   "total_params": count(state.params, None), "changed_params": changed,
                   "initial_val_accuracy": train.evaluate(initial, val)["accuracy"],
                   "val_accuracy": 1 - history.val_error[-1], "train_accuracy_last_epoch": 1 - history.train_error[-1],
                   "val_error_curve": history.val_error, "train_loss_curve": history.train_loss,
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"seed {seed} {mode:10s}: {row['trainable_params']:6d} of {row['total_params']} params trainable "
                  f"({row['changed_params']} changed), val acc {row['val_accuracy']:.3f} (init "
                  f"{row['initial_val_accuracy']:.3f}), train acc {row['train_accuracy_last_epoch']:.3f} "
                  f"[{row['seconds']:.0f} s]", flush=True)
    summary = {}
    for mode in config["modes"]:
        accs = [r["val_accuracy"] for r in rows if r["mode"] == mode]
        summary[mode] = {"val_accuracy_mean": float(np.mean(accs)), "val_accuracy_min": float(np.min(accs)),
                         "val_accuracy_max": float(np.max(accs)),
                         "trainable_params": next(r["trainable_params"] for r in rows if r["mode"] == mode)}
    print(summary)
    results = {"n_train": len(train_set["label"]), "n_val": len(val["label"]), "steps": steps, "chance": 0.1,
               "runs": rows, "summary": summary}
    return write_results(__file__, config, results, figures={"bn_only": plot(rows, summary, config)}, out=out,
                         started=started)


def plot(rows: list[dict], summary: dict, config) -> plt.Figure:
    fig, (ax, ax_curve) = plt.subplots(1, 2, figsize=(12, 4.5))
    modes = list(summary)
    x = np.arange(len(modes))
    ax.bar(x, [100 * summary[m]["val_accuracy_mean"] for m in modes], 0.6, color=["C0", "C2", "C1"][:len(modes)])
    for i, m in enumerate(modes):
        accs = [100 * r["val_accuracy"] for r in rows if r["mode"] == m]
        ax.plot([i] * len(accs), accs, "k.", ms=8)
        ax.text(i, 2, f"{summary[m]['trainable_params']:,}\ntrainable", ha="center", va="bottom", color="w")
    ax.axhline(10, color="k", ls="--", lw=1, label="chance (10%)")
    ax.set_xticks(x, modes)
    ax.set(ylabel="validation accuracy (%)", ylim=(0, 100),
           title="what trains (bars: mean over seeds, dots: each seed)")
    ax.legend(loc="upper right")
    for r in rows:
        color = {"all": "C0", "bn_only": "C2", "last_layer": "C1"}[r["mode"]]
        ax_curve.plot(np.arange(1, len(r["val_error_curve"]) + 1), [100 * (1 - e) for e in r["val_error_curve"]],
                      "o-", color=color, alpha=0.8, label=f"{r['mode']} (seed {r['seed']})")
    ax_curve.set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy per epoch")
    ax_curve.legend(fontsize=7)
    return finish_figure(fig, (ax, ax_curve),
                         suptitle=f"Random ResNet (widths {tuple(config['widths'])}, {config['blocks_per_stage']} "
                                  f"block/stage) on the MNIST sample: train all, BN scale+bias only, or the dense "
                                  f"head only")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
