"""Which activation function makes the same plain CNN train fastest, and how many ReLUs die?

Claim (course notes, 002_de9ed5bb46c1eb74.txt, "Activation functions"): sigmoid has zero gradient when
saturated and is not zero-centred; tanh is zero-centred but still saturates; ReLU does not saturate for
positive inputs but has zero gradient for negative ones ("partially => dead ReLU!"); leaky ReLU's "small
gradient for negative values give[s a] tiny chance to recover"; ELU is zero-centred-ish and smooth. The
summary: use ReLU, and avoid "dead ReLU or saturated sigmoid" by good initialization, preprocessing and BN.

Setup: ``experiments._nets.ConvNet`` with NO normalization (so nothing rescues a poor activation), two
plain conv blocks per stage, widths (8, 16, 32): 7 conv layers + a dense head. The only change between runs
is ``activation=`` and the matching initializer: He-normal (``init.he_normal``, fan-in, gain sqrt 2; leaky
ReLU with its slope 0.01) for ReLU, leaky ReLU and ELU; Xavier-normal (``init.xavier_normal``, gain 1,
Glorot & Bengio 2010) for sigmoid and tanh. Biases keep the library's (PyTorch's) default
U(+-1/sqrt(fan_in)). Leaky ReLU is the library's / PyTorch's slope 0.01 (the notes draw max(0.1 x, x)).
SGD with momentum 0.9, the learning rate annealed to 0 by a cosine schedule over the run
(``train.schedules.cosine``), so the final numbers are those of a converged-as-far-as-it-goes run, not of
a noisy constant-lr snapshot; no BatchNorm, so there are no BN statistics to evaluate. MNIST-sample subset.

Protocol (``experiments._protocol``): seeds ``_protocol.SEEDS`` (5), paired: seed s gives every activation
the same data order and the same initializer key (the weights differ only by the He / Xavier scale); every
number is mean +- standard error over the seeds; each claim is judged by ``_protocol.verdict`` on the
per-seed differences (95% Student-t interval, ``min_effect`` given per claim in results.json).

Measured: (a) convergence: training loss per epoch (mean over the epoch's batches, as they ran), its mean
over all epochs (the area under the curve: lower = faster), the first epoch at which it falls below
``target_loss``; final validation error. (b) dead units on a held-out batch of validation digits, per conv
layer, at initialization and after training. The pre-activations are the conv outputs (no norm sits between
a conv and its activation), read with flax's ``capture_intermediates``. A unit is an output channel of a
conv layer (its weights are shared across positions): DEAD when its pre-activation is <= 0 at every position
of every example of the batch, so a ReLU outputs exactly 0 there and passes back no gradient. (c) why
sigmoid fails: the fraction of sigmoid / tanh pre-activations that are SATURATED (derivative below 10% of
its maximum: |z| > 3.64 for sigmoid, |z| > 1.82 for tanh) at init, and the gradient norm of the first conv
kernel over that of the last conv kernel at init (the derivative compounding over depth: sigmoid's is at
most 1/4 per layer).

Run: python -m experiments.activation_functions  ->  experiments/results/activation_functions/
Result (default config: 8 weight layers, widths 8/16/32, 1,000 digits, batch 25, SGD momentum 0.9, lr 0.03
cosine-annealed to 0 over 6 epochs = 240 steps; 5 paired seeds; 226.81 s wall on a 2-core CPU shared with
another job, load average 2.0 before and 4.9 after). Mean +- sem over the 5 seeds. Final validation error:
sigmoid 90.0 +- 0.0% (chance), tanh 52.2 +- 0.9%, ReLU 33.5 +- 14.1% (seed 2 stuck at 89.0% with 11.2% of
its channels dead; the other four 14.8-27.4%), leaky ReLU 18.6 +- 2.4%, ELU 7.7 +- 0.9%. Training loss
averaged over the 6 epochs: sigmoid 2.320 +- 0.001, tanh 1.822 +- 0.016, ReLU 1.649 +- 0.166, leaky ReLU
1.475 +- 0.066, ELU 0.710 +- 0.022; epochs to a training loss below 1.0: ELU 2-3, ReLU 5-6 (seed 2 never),
leaky ReLU 5-6, tanh and sigmoid never. Verdicts (paired differences b - a, 95% interval, min_effect):
sigmoid fails where ReLU trains: ReLU - sigmoid = -56.5 +- 14.1 points, [-95.5, -17.4], min_effect 50 points
-> reproduced. ELU converges fastest: ELU - tanh -1.112 +- 0.028, ELU - ReLU -0.939 +- 0.173, ELU - leaky ReLU
-0.765 +- 0.061 (epoch-mean training loss), every interval below 0 -> reproduced (3 of 3). ReLU beats tanh:
-18.6 +- 14.1 points, [-57.9, +20.6] -> partly. Leaky ReLU beats ReLU: -14.9 +- 14.2 points, [-54.4, +24.7]
-> partly. ReLUs die: dead ReLU channels 0.8 +- 0.5% at init, 2.2 +- 2.2% after training, +1.4 +- 2.5
points, [-5.4, +8.3] -> partly (one seed of five: the one that stuck). Why sigmoid fails: 0.000% of its
pre-activations are saturated (|z| > 3.64) at init and after training, so not saturation; the gradient norm
of the first conv kernel over the last one at init is 5.9e-6 +- 1.3e-6 for sigmoid against 0.118 +- 0.016
(ReLU), 0.080 +- 0.015 (tanh), 0.100 +- 0.024 (ELU): the derivative (at most 1/4) compounding over 7 layers,
as init_signal_propagation's 0% saturation suggests. Tanh is 0% saturated at init, 8.4 +- 0.8% after
training. The "always negative" fraction printed for sigmoid (10.4 -> 21.8%) means nothing for a sigmoid.
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
from experiments._common import (
    finish_figure,
    first_epoch,
    machine_load,
    run,
    write_results,
)
from experiments._nets import ConvNet, mnist_splits
from jaxnets import init, train
from jaxnets import nn as jnn

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, n_train=1000, n_val=500, probe_size=300,
    widths=(8, 16, 32), blocks_per_stage=2,
    activations=("sigmoid", "tanh", "relu", "leaky_relu", "elu"),
    init={"sigmoid": "xavier", "tanh": "xavier", "relu": "he", "leaky_relu": "he", "elu": "he"},
    leaky_slope=0.01,  # the slope of get_activation("leaky_relu"); He's gain uses the same
    optimizer="sgd", lr=0.03, momentum=0.9, schedule="cosine to 0 over the run", epochs=6, batch_size=25,
    target_loss=1.0, evaluation="cosine schedule to lr 0 (no BatchNorm in the net)",
    # |z| beyond which the activation's derivative is below 10% of its maximum
    saturation={"sigmoid": 3.636, "tanh": 1.818},
    # per claim: the smallest effect the notes' wording describes (validation error in [0, 1])
    min_effect={"sigmoid_fails": 0.5, "others": 0.0},
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, widths=(32, 64, 128), blocks_per_stage=4, epochs=30,
                   batch_size=50)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=100, n_val=50, probe_size=25, widths=(4, 8),
                   blocks_per_stage=1, activations=("sigmoid", "relu"), epochs=1, batch_size=25)
RELU_FAMILY = ("relu", "leaky_relu", "elu")


def initializer(activation: str, config: dict):
    """He-normal for the ReLU family, Xavier-normal for sigmoid/tanh (see the module docstring)."""
    if config["init"][activation] == "xavier":
        return init.xavier_normal()
    if activation == "leaky_relu":
        return init.he_normal(nonlinearity="leaky_relu", negative_slope=config["leaky_slope"])
    return init.he_normal()


def pre_activations(state: train.TrainState, images: np.ndarray) -> list[jax.Array]:
    """The output of every conv layer (= the input of its activation) on `images`, in call order."""
    x = jnp.asarray(images, jnp.float32) / 255.0  # fit's preprocessing (data.augment.to_float)
    _, captured = state.apply_fn({"params": state.params}, x, train=False, mutable=["intermediates"],
                                 capture_intermediates=lambda module, _: isinstance(module, jnn.Conv))
    convs = captured["intermediates"]
    return [convs[name]["__call__"][0] for name in sorted(convs, key=lambda n: int(n.split("_")[-1]))]


def dead_fractions(zs: list[jax.Array]) -> dict:
    """Per conv layer: fraction of channels (and of channel x position units) that are <= 0 for every example."""
    per_channel, per_position = [], []
    for z in zs:
        never_positive = np.asarray(jnp.all(z <= 0, axis=0))  # [H, W, C]
        per_position.append(float(never_positive.mean()))
        per_channel.append(float(never_positive.all(axis=(0, 1)).mean()))
    return {"per_layer": per_channel, "per_layer_positions": per_position,
            "all_layers": float(np.mean(per_channel))}


def saturated_fraction(zs: list[jax.Array], threshold: float) -> float:
    """Fraction of all conv pre-activations with |z| > threshold (the derivative below 10% of its maximum)."""
    return float(np.mean([float(jnp.mean(jnp.abs(z) > threshold)) for z in zs]))


def gradient_ratio(state: train.TrainState, images: np.ndarray, labels: np.ndarray) -> dict:
    """Cross-entropy gradient norm of each conv kernel on the probe; first conv over last conv."""
    x = jnp.asarray(images, jnp.float32) / 255.0

    def loss(params):
        logits = state.apply_fn({"params": params}, x, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels)).mean()

    grads = jax.grad(loss)(state.params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    convs = sorted(((jax.tree_util.keystr(p), float(jnp.linalg.norm(g))) for p, g in flat
                    if "Conv" in jax.tree_util.keystr(p) and "kernel" in jax.tree_util.keystr(p)),
                   key=lambda kv: int(kv[0].split("Conv_")[1].split("'")[0]))
    norms = [n for _, n in convs]
    return {"per_layer": norms, "first_over_last": norms[0] / norms[-1]}


def train_one(activation: str, seed: int, config: dict, train_set: dict, val_set: dict, probe: dict) -> dict:
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"], norm=None,
                    activation=activation, kernel_init=initializer(activation, config))
    steps = config["epochs"] * (len(train_set["label"]) // config["batch_size"])
    schedule = train.schedules.cosine(config["lr"], steps)  # annealed to 0 at the last step
    tx = train.optimizer(config["optimizer"], learning_rate=schedule, momentum=config["momentum"])
    # fit initialises with TrainState.create(model, tx, one example, seed): the same parameters as here.
    initial = train.TrainState.create(model, tx, train_set["image"][:1], seed)
    z0 = pre_activations(initial, probe["image"])
    row = {"seed": seed, "dead_at_init": dead_fractions(z0),
           "gradient_at_init": gradient_ratio(initial, probe["image"], probe["label"])}
    if activation in config["saturation"]:
        row["saturated_at_init"] = saturated_fraction(z0, config["saturation"][activation])
    started = time.perf_counter()
    try:
        state, history = train.fit(model, train_set, val_data=val_set, epochs=config["epochs"],
                                   batch_size=config["batch_size"], optimizer=tx, seed=seed,
                                   learning_rate=schedule, progress=False)
    except train.NonFiniteLossError as error:  # a result to record, not a crash
        print(f"{activation} seed {seed}: {error}", flush=True)
        nan = [float("nan")] * config["epochs"]
        return dict(row, diverged=True, train_loss=nan, val_error=nan, mean_train_loss=float("nan"),
                    epochs_to_target=None)
    z1 = pre_activations(state, probe["image"])
    row.update(diverged=False, train_loss=history.train_loss, train_error=history.train_error,
               val_loss=history.val_loss, val_error=history.val_error,
               mean_train_loss=float(np.mean(history.train_loss)),
               epochs_to_target=first_epoch(history.train_loss, config["target_loss"], strict=True),
               dead_after_training=dead_fractions(z1), seconds=time.perf_counter() - started)
    if activation in config["saturation"]:
        row["saturated_after_training"] = saturated_fraction(z1, config["saturation"][activation])
    print(f"{activation:10s} seed {seed} loss {' '.join(f'{v:.3f}' for v in history.train_loss)}  val err "
          f"{history.val_error[-1]:.3f}  dead {row['dead_at_init']['all_layers']:.3f} -> "
          f"{row['dead_after_training']['all_layers']:.3f}  grad first/last "
          f"{row['gradient_at_init']['first_over_last']:.3g} [{row['seconds']:.0f} s]", flush=True)
    return row


def claim(text: str, per_seed: dict, a: str, b: str, metric: str, direction: str, min_effect: float,
          *, scale: float = 100.0, unit: str = " points") -> dict:
    """A claim "b beats a" judged by the protocol's verdict on the per-seed differences b - a."""
    d = protocol.paired(per_seed[a], per_seed[b])
    return {"claim": text, "metric": metric, "a": a, "b": b, "direction": direction, "min_effect": min_effect,
            "a_value": protocol.describe(per_seed[a], scale=scale), "b_value": protocol.describe(per_seed[b], scale=scale),
            "difference": d, "difference_text": protocol.describe(d, scale=scale, unit=unit),
            "verdict": protocol.verdict(d, direction=direction, min_effect=min_effect)}


def judge(runs: dict, config: dict) -> list[dict]:
    acts = config["activations"]
    val = {a: [r["val_error"][-1] for r in runs[a]] for a in acts}
    area = {a: [r["mean_train_loss"] for r in runs[a]] for a in acts}
    small = config["min_effect"]["others"]
    claims = []
    if "sigmoid" in acts and "relu" in acts:
        claims.append(claim("sigmoid fails to train the deep plain net where ReLU trains", val, "sigmoid", "relu",
                            "final validation error", "lower", config["min_effect"]["sigmoid_fails"]))
    if "elu" in acts:
        for other in (a for a in acts if a not in ("elu", "sigmoid")):
            claims.append(claim(f"ELU converges faster than {other}", area, other, "elu",
                                "training loss averaged over all epochs (area under the curve)", "lower", small,
                                scale=1.0, unit=""))
    if "relu" in acts and "tanh" in acts:
        claims.append(claim("ReLU (the notes' default) beats tanh", val, "tanh", "relu",
                            "final validation error", "lower", small))
    if "relu" in acts and "leaky_relu" in acts:
        claims.append(claim("leaky ReLU beats ReLU (dead units can recover)", val, "relu", "leaky_relu",
                            "final validation error", "lower", small))
    if "relu" in acts:
        before = [r["dead_at_init"]["all_layers"] for r in runs["relu"]]
        after = [r.get("dead_after_training", {}).get("all_layers", float("nan")) for r in runs["relu"]]
        claims.append(claim("ReLUs die during training (more dead channels after training than at init)",
                            {"at init": before, "after training": after}, "at init", "after training",
                            "fraction of ReLU channels <= 0 on every probe digit (mean over conv layers)",
                            "higher", small))
    return claims


def summarize(runs: dict, config: dict) -> dict:
    out = {}
    for a, rows in runs.items():
        s = {"final_val_error": protocol.estimate([r["val_error"][-1] for r in rows]),
             "final_train_loss": protocol.estimate([r["train_loss"][-1] for r in rows]),
             "mean_train_loss": protocol.estimate([r["mean_train_loss"] for r in rows]),
             "epochs_to_target": [r["epochs_to_target"] for r in rows],
             "dead_at_init": protocol.estimate([r["dead_at_init"]["all_layers"] for r in rows]),
             "dead_after_training": protocol.estimate([r.get("dead_after_training", {}).get("all_layers",
                                                                                           float("nan")) for r in rows]),
             "grad_first_over_last_at_init": protocol.estimate(
                 [r["gradient_at_init"]["first_over_last"] for r in rows]),
             "diverged": sum(r["diverged"] for r in rows)}
        if a in config["saturation"]:
            s["saturated_at_init"] = protocol.estimate([r["saturated_at_init"] for r in rows])
            s["saturated_after_training"] = protocol.estimate([r.get("saturated_after_training", float("nan"))
                                                               for r in rows])
        out[a] = s
    return out


def main(config=CONFIG, *, out=None):
    """Train the same plain CNN with each activation over paired seeds; loss curves and dead-unit fractions."""
    started = time.perf_counter()
    load_before = machine_load()
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    probe = {k: v[:config["probe_size"]] for k, v in val_set.items()}  # held-out digits for the unit counts
    runs = {a: [train_one(a, s, config, train_set, val_set, probe) for s in config["seeds"]]
            for a in config["activations"]}
    summary = summarize(runs, config)
    claims = judge(runs, config)
    for c in claims:
        print(f"{c['claim']}: {c['a_value']} -> {c['b_value']}, diff {c['difference_text']}: {c['verdict']}")
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]), "probe_size": len(probe["label"]),
               "depth": ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"]).depth,
               "machine_load": {"before": load_before, "after": machine_load()},
               "summary": summary, "claims": claims, "runs": runs}
    return write_results(__file__, config, results, figures={"activation_functions": plot(runs, config)},
                         out=out, started=started)


def plot(runs: dict, config: dict):
    fig, (ax_loss, ax_val, ax_dead) = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = {a: f"C{i}" for i, a in enumerate(config["activations"])}
    epochs = np.arange(1, config["epochs"] + 1)
    for a, rows in runs.items():
        protocol.band(ax_loss, epochs, [r["train_loss"] for r in rows], color=colors[a], marker="o",
                      label=f"{a} ({config['init'][a]})")
        protocol.band(ax_val, epochs, [r["val_error"] for r in rows], color=colors[a], marker="o", label=a,
                      scale=100.0)
        if a in RELU_FAMILY:
            layers = np.arange(1, len(rows[0]["dead_at_init"]["per_layer"]) + 1)
            protocol.band(ax_dead, layers, [r["dead_at_init"]["per_layer"] for r in rows], color=colors[a],
                          ls=":", label=f"{a}, at init", scale=100.0)
            protocol.band(ax_dead, layers, [r.get("dead_after_training", {}).get("per_layer", [np.nan] * len(layers))
                                            for r in rows], color=colors[a], marker="s",
                          label=f"{a}, trained", scale=100.0)
    ax_loss.axhline(config["target_loss"], color="k", ls=":", lw=1, label="target")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (mean over the epoch)",
                title=f"convergence, mean +- sem over {len(config['seeds'])} seeds (cosine lr)")
    ax_val.set(xlabel="epoch", ylabel="validation error (%)", ylim=(0, 100), title="validation error")
    ax_dead.set(xlabel="conv layer", ylabel=f"% channels <= 0 on all {config['probe_size']} probe digits",
                ylim=(0, 100), title="dead ReLUs (leaky ReLU / ELU: always-negative)")
    return finish_figure(fig, (ax_loss, ax_val, ax_dead), legend={"fontsize": 7})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
