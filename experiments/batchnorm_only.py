"""Training BatchNorm and only BatchNorm (Frankle, Schwab & Morcos 2020): do the BN scales and biases of a RANDOM
network do better than the same number of other, randomly chosen parameters?

Claim (/work/shared/reference/000_3cfbcdab51860f78.txt, Concept 6.50 "BN has trainable parameters": "if one
randomly initializes a CNN, freezes all other parameters, and only train BN parameters, the performance is
surprisingly good"): with every conv and the output layer frozen at their random initial values, training
only the per-channel scale gamma and shift beta of each BN layer reaches accuracy far above chance (Frankle et
al.: up to 82% on CIFAR-10 with a very deep ResNet, well under 1% of the parameters, the output layer frozen
too), and more than training the same number of randomly chosen weights does (their control: the BN
parameters are special, not merely few).

Setup: ``experiments._nets.ConvNet(residual=True, norm="batch")``, a ResNet (stem conv, residual blocks of two
3x3 convs, 1x1 projection shortcuts where the width changes, every conv followed by a BN, global average
pooling, dense head), initialised with PyTorch's default (``init.pytorch_default``), trained on a stratified
subset of the MNIST sample's training digits, tested on the 1,000 held-out digits. Protocol
(``experiments/_protocol``): the seeds ``_protocol.SEEDS``; for a given seed every mode starts from the SAME
random network and sees the same batches; the modes differ only in what the optimizer may change:
  - ``all``: every parameter;
  - ``bn_only``: the BN ``scale`` and ``bias`` (gamma, beta) only; convs and the dense head stay random;
  - ``random_subset``: as many conv weights as there are BN parameters, drawn at random per seed with the BN
    layout, two weights of every conv's every output channel (the channel's gamma and beta are the BN
    parameters); their gradient is masked to zero everywhere else, and gamma, beta and the head stay frozen;
  - ``head_only``: the dense head only (a linear classifier on the random network's pooled features, which
    its BN layers still normalise with batch statistics, gamma = 1, beta = 0).
Optimizer: Adam, the learning rate cosine-annealed to 0 (the protocol's evaluation: BN's running averages
after the annealed run, which have settled; no recomputation), one peak rate per mode (``lr``): for the three
frozen modes the best of 0.03, 0.1, 0.3 and 1.0 in a pilot on seed 5 (not one of the protocol's seeds),
validation accuracy bn_only 59.6 / 70.7 / 76.7 / 77.8%, random_subset 37.9 / 38.4 / 37.7 / 31.4%, head_only
67.1 / 75.1 / 78.8 / 81.2% (with the head frozen at its small random weights a confident logit needs the few
trainable parameters to move far; bn_only and head_only are best at the grid's edge, by 1.1 and 2.4 points
over 0.3); training everything uses 0.01 (1e-1 is too large for it).
Frozen parameters get an update of exactly 0 (``train.optimizer(trainable=...)``, or the masked gradient's
zero Adam moments); the script counts the scalars that changed and checks the count. Chance is 10%.

Claims judged by ``_protocol.verdict`` on the validation accuracy (paired over the seeds, 95% interval):
  (1) bn_only beats random_subset (equal parameter count), min_effect 5 points;
  (2) bn_only is far above chance: bn_only - the untrained network (chance: 10%), min_effect 30 points;
  (context, not a claim of the notes) bn_only against head_only, min_effect 0.

Run: python -m experiments.batchnorm_only  ->  experiments/results/batchnorm_only/
Result (default config: ResNet widths 16/32/64, one block per stage, 9 BN layers, 77,754 parameters of which
672 are BN scales and biases; 2,050 training digits, 5 epochs = 320 steps of batch 32; seeds 0-4; 521 s wall on
the 2-core CPU shared with other jobs, load average 8.5 before and 5.7 after). Validation accuracy, mean +-
standard error over the 5 seeds: training everything 97.7 +- 0.1%, BN only 79.8 +- 2.2% (72.0 to 85.5% per
seed), the random subset of 672 conv weights 43.9 +- 3.5%, the dense head only (650 parameters) 75.8 +- 0.8%,
the untrained network 11.1 +- 1.1% (chance 10%). Claims (paired differences b - a of validation accuracy):
  (1) BN only beats the random subset of equal size: +35.9 +- 3.1 points (95% interval 27.3 to 44.5; min_effect
      5): reproduced;
  (2) BN only far above chance: +68.7 +- 2.4 points over the untrained network (62.2 to 75.3; min_effect 30):
      reproduced;
  (context) BN only against the dense head only: +4.0 +- 1.6 points (-0.5 to 8.6): partly (ahead on 4 of 5
      networks, by -1.8 to 7.8 points).
All frozen modes underfit (training accuracy in evaluation mode: BN only 83.4 +- 2.0%, head only 79.8 +- 0.8%,
random subset 44.6 +- 3.5%; last-epoch training loss 0.694 +- 0.052, 0.735 +- 0.033, 1.886 +- 0.005 against
0.040 +- 0.003 for training everything), so these accuracies measure what 320 steps reach, not a limit.
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import train

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, n_train=2048, n_val=1000, widths=(16, 32, 64),
    blocks_per_stage=1, modes=("all", "bn_only", "random_subset", "head_only"), optimizer="adam",
    lr={"all": 1e-2, "bn_only": 1.0, "random_subset": 0.1, "head_only": 1.0}, schedule="cosine to 0",
    batch_size=32, epochs=5, min_effect={"bn_only_vs_random_subset": 0.05, "bn_only_vs_chance": 0.30,
                                         "bn_only_vs_head_only": 0.0},
    evaluation="running BN averages after a learning rate annealed to 0 (cosine)",
)
# Deeper and wider (Frankle et al.: BN-only accuracy grows with depth and width), the whole MNIST sample.
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, n_val=None, widths=(64, 128, 256), blocks_per_stage=4,
                   epochs=30)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=64, n_val=64, widths=(4, 8), epochs=1,
                   modes=("bn_only", "random_subset"))
CLAIMS = {"bn_only_vs_random_subset": ("random_subset", "bn_only"), "bn_only_vs_chance": ("untrained", "bn_only"),
          "bn_only_vs_head_only": ("head_only", "bn_only")}  # claim: b's accuracy above a's
# Evaluation ignores the optimizer, but its compiled step is keyed on the state's static `tx`: states are
# evaluated with this one placeholder, so a new optimizer (random_subset: one per seed) compiles no new evaluation.
EVAL_TX = optax.identity()


def is_bn(path: tuple, _param) -> bool:
    """A BatchNorm scale or bias, e.g. ``("BatchNorm_3", "scale")``."""
    return path[-2].startswith("BatchNorm_") and path[-1] in ("scale", "bias")


def is_head(path: tuple, _param) -> bool:
    """The dense output layer, ``("Dense_0", "kernel" | "bias")``."""
    return path[0] == "Dense_0"


def count(params, predicate) -> int:
    """Number of parameters (scalars) for which ``predicate(path, param)`` holds (all when None)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return int(sum(p.size for path, p in leaves if predicate is None or predicate(train.path_names(path), p)))


def random_subset_mask(params, seed: int, per_channel: int = 2):
    """1.0 at ``per_channel`` random weights of every output channel of every conv kernel, 0.0 elsewhere.

    Kernels are ``[kh, kw, c_in, c_out]``: per output channel, ``per_channel`` of its ``kh * kw * c_in`` weights,
    drawn without replacement from ``fold_in(key(seed), conv index)``. Each conv feeds one BN with ``c_out``
    channels, so with ``per_channel = 2`` the mask selects exactly as many weights as there are BN parameters.
    """
    def leaf_mask(path, p):
        names = train.path_names(path)
        if not (names[0].startswith("Conv_") and names[-1] == "kernel"):
            return jnp.zeros_like(p)
        fan = int(np.prod(p.shape[:-1]))
        key = jax.random.fold_in(jax.random.key(seed), int(names[0].split("_")[1]))
        ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (fan, p.shape[-1])), axis=0), axis=0)
        return (ranks < per_channel).astype(p.dtype).reshape(p.shape)
    return jax.tree_util.tree_map_with_path(leaf_mask, params)


def mask_gradients(mask) -> optax.GradientTransformation:
    """Multiply the gradient by ``mask`` (a 0/1 tree like the parameters): masked weights get no update."""
    return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                        lambda updates, state, params=None: (jax.tree.map(jnp.multiply, updates, mask),
                                                                             state))


def optimizer_for(mode: str, seed: int, config: dict, params, steps: int):
    """The optimizer of ``mode`` (for ``random_subset`` the seed's mask in front of it) and its trainable count."""
    schedule = train.schedules.cosine(config["lr"][mode], steps)
    if mode == "random_subset":
        mask = random_subset_mask(params, seed)
        n = int(sum(float(m.sum()) for m in jax.tree.leaves(mask)))
        return optax.chain(mask_gradients(mask), train.optimizer(config["optimizer"], learning_rate=schedule)), n
    trainable = {"all": None, "bn_only": is_bn, "head_only": is_head}[mode]
    return train.optimizer(config["optimizer"], learning_rate=schedule, trainable=trainable), count(params, trainable)


def main(config=CONFIG, *, out=None):
    """Validation accuracy of training everything, only BN, an equal random subset, or only the dense head."""
    started = time.perf_counter()
    load_before = machine_load()
    train_set, val = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"],
                    residual=True, norm="batch")
    steps = len(train_set["label"]) // config["batch_size"] * config["epochs"]
    n_bn = count(train.TrainState.create(model, EVAL_TX, train_set["image"][:1], 0).params, is_bn)
    shared_tx = {}  # one optimizer object per mode (random_subset: per seed), so fit reuses its compiled step
    runs = {mode: [] for mode in ("untrained", *config["modes"])}
    for seed in config["seeds"]:
        initial = train.TrainState.create(model, EVAL_TX, train_set["image"][:1], seed)
        runs["untrained"].append({"seed": seed, "val_accuracy": train.evaluate(initial, val)["accuracy"]})
        for mode in config["modes"]:
            start = time.perf_counter()
            if mode not in shared_tx or mode == "random_subset":
                shared_tx[mode] = optimizer_for(mode, seed, config, initial.params, steps)
            tx, trainable = shared_tx[mode]
            if mode == "random_subset" and trainable != n_bn:
                raise RuntimeError(f"random_subset selects {trainable} weights, BN has {n_bn} parameters")
            state, history = train.fit(model, train_set, epochs=config["epochs"], batch_size=config["batch_size"],
                                       optimizer=tx, seed=seed, progress=False)
            final = state.replace(opt_state=(), tx=EVAL_TX)
            changed = int(sum(int((a != b).sum()) for a, b in zip(jax.tree.leaves(initial.params),
                                                                  jax.tree.leaves(state.params))))
            if changed > trainable:  # the freezing held: no frozen scalar moved
                raise RuntimeError(f"{mode}, seed {seed}: {changed} scalars changed, only {trainable} trainable")
            row = {"seed": seed, "trainable_params": trainable, "total_params": count(state.params, None),
                   "changed_params": changed, "val_accuracy": train.evaluate(final, val)["accuracy"],
                   "train_accuracy_eval_mode": train.evaluate(final, train_set)["accuracy"],
                   "train_loss_curve": history.train_loss, "train_error_curve": history.train_error,
                   "seconds": time.perf_counter() - start}
            runs[mode].append(row)
            print(f"seed {seed} {mode:13s}: {trainable:6d} of {row['total_params']} trainable ({changed} changed), "
                  f"val acc {row['val_accuracy']:.3f}, train acc {row['train_accuracy_eval_mode']:.3f}, train loss "
                  f"{history.train_loss[-1]:.3f} [{row['seconds']:.0f} s]", flush=True)
    summary = {mode: {"val_accuracy": protocol.estimate([r["val_accuracy"] for r in rows])} for mode, rows in runs.items()}
    for mode in config["modes"]:
        rows = runs[mode]
        summary[mode].update(trainable_params=rows[0]["trainable_params"], total_params=rows[0]["total_params"],
                             train_accuracy_eval_mode=protocol.estimate([r["train_accuracy_eval_mode"] for r in rows]),
                             train_loss_last_epoch=protocol.estimate([r["train_loss_curve"][-1] for r in rows]))
    claims = {}
    for name, (a, b) in CLAIMS.items():
        if a in runs and b in runs:
            d = protocol.paired([r["val_accuracy"] for r in runs[a]], [r["val_accuracy"] for r in runs[b]])
            claims[name] = {"claim": f"{b} has a higher validation accuracy than {a}", "a": a, "b": b,
                            "paired_difference": d, "direction": "higher", "min_effect": config["min_effect"][name],
                            "verdict": protocol.verdict(d, direction="higher", min_effect=config["min_effect"][name])}
    for mode, s in summary.items():
        print(f"{mode:13s} val acc {protocol.describe(s['val_accuracy'], scale=100, unit='%')}")
    for name, c in claims.items():
        d = c["paired_difference"]
        print(f"{name}: {protocol.describe(d, scale=100, unit=' points')} (95% CI {100 * d['ci95'][0]:.1f}, "
              f"{100 * d['ci95'][1]:.1f}) -> {c['verdict']}")
    results = {"n_train": len(train_set["label"]), "n_val": len(val["label"]), "steps": steps, "chance": 0.1,
               "bn_params": n_bn, "machine_load_before": load_before, "machine_load_after": machine_load(),
               "summary": summary, "claims": claims, "runs": runs}
    return write_results(__file__, config, results, figures={"bn_only": plot(runs, summary, claims, config)}, out=out,
                         started=started)


def plot(runs: dict, summary: dict, claims: dict, config) -> plt.Figure:
    fig, (ax, ax_loss, ax_claim) = plt.subplots(1, 3, figsize=(17, 4.8))
    modes = list(runs)
    x = np.arange(len(modes))
    colors = {m: f"C{i}" for i, m in enumerate(("untrained", "all", "bn_only", "random_subset", "head_only"))}
    ax.bar(x, [100 * summary[m]["val_accuracy"]["mean"] for m in modes], 0.6, capsize=4,
           yerr=[100 * summary[m]["val_accuracy"]["sem"] for m in modes], color=[colors[m] for m in modes])
    for i, m in enumerate(modes):
        accs = [100 * r["val_accuracy"] for r in runs[m]]
        ax.plot([i] * len(accs), accs, "k.", ms=6)
        if "trainable_params" in summary[m]:
            ax.text(i, 2, f"{summary[m]['trainable_params']:,}\ntrainable", ha="center", va="bottom", color="w",
                    fontsize=8)
    ax.axhline(10, color="k", ls="--", lw=1, label="chance (10%)")
    ax.set_xticks(x, modes, rotation=15)
    ax.set(ylabel="validation accuracy (%)", ylim=(0, 100),
           title=f"what trains (mean +- sem over {len(config['seeds'])} seeds; dots: seeds)")
    epochs = np.arange(1, config["epochs"] + 1)
    for m in config["modes"]:
        protocol.band(ax_loss, epochs, [r["train_loss_curve"] for r in runs[m]], label=m, color=colors[m])
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (as the batches ran)", title="training loss")
    names = list(claims)
    d = [claims[c]["paired_difference"] for c in names]
    means = np.array([100 * e["mean"] for e in d])
    ax_claim.errorbar(means, np.arange(len(names)), fmt="o", capsize=4,
                      xerr=np.abs(np.array([[100 * e["ci95"][0] for e in d], [100 * e["ci95"][1] for e in d]]) - means))
    for i, e in enumerate(d):
        ax_claim.annotate(f"{100 * e['mean']:.1f} [{100 * e['ci95'][0]:.1f}, {100 * e['ci95'][1]:.1f}]",
                          (100 * e["ci95"][1], i), textcoords="offset points", xytext=(6, 0), va="center", fontsize=8)
    for i, c in enumerate(names):
        ax_claim.plot([100 * claims[c]["min_effect"]] * 2, [i - 0.3, i + 0.3], "k--", lw=1)
    ax_claim.axvline(0, color="k", lw=1)
    ax_claim.set_yticks(np.arange(len(names)), [f"{c.replace('_', ' ')}\n{claims[c]['verdict']}" for c in names],
                        fontsize=8)
    ax_claim.set(xlabel="paired difference b - a (points of accuracy), 95% interval; dashes: min_effect",
                 title="claims")
    ax.legend(fontsize=8)
    ax_loss.legend(fontsize=8)
    return finish_figure(fig, (ax, ax_loss, ax_claim),
                         suptitle=f"Random ResNet (widths {tuple(config['widths'])}, {config['blocks_per_stage']} "
                                  f"block/stage) on the MNIST sample: what the optimizer may change")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
