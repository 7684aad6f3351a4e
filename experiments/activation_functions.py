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
Same seed, data order and optimizer (SGD with momentum) for every activation; MNIST-sample subset.

Measured: (a) convergence: training loss per epoch (mean over the epoch's batches, as they ran) and the
first epoch / step at which it falls below ``target_loss``; validation error. (b) dead units on a held-out
batch of validation digits, per conv layer, at initialization and after training. The pre-activations are
the conv outputs (no norm sits between a conv and its activation), read with flax's
``capture_intermediates``. A unit is an output channel of a conv layer (its weights are shared across
positions): DEAD when its pre-activation is <= 0 at every position of every example of the batch, so a
ReLU outputs exactly 0 there and passes back no gradient for any of them. The same "always negative"
fraction is reported for leaky ReLU and ELU, whose negative side still passes a gradient (0.01, e^z), and,
for completeness, for sigmoid and tanh, where it means nothing special. The fraction per position
(channel x pixel, an MLP-style unit) is recorded too.

Run: python -m experiments.activation_functions  ->  experiments/results/activation_functions/
Result (default config: 8 weight layers, widths 8/16/32, 1,500 digits, SGD momentum 0.9, lr 0.03, 10 epochs
= 300 steps; 97 s wall on a quiet 2-core CPU): epochs to a training loss below 1.0: ELU 3, tanh / ReLU /
leaky ReLU 7, sigmoid never (2.311 after 10 epochs, chance is ln 10 = 2.303; 90% validation error). Final
training loss ELU 0.071, leaky ReLU 0.42, ReLU 0.45, tanh 0.50; validation error 5.2%, 14.8%, 18.8%, 11.2%.
Dead channels on 500 held-out digits (mean over the 7 conv layers): ReLU 1.8% at init (one of 16 channels in
conv layer 4, two of 32 in layer 6), 1.8% after training at lr 0.03 (those two layers recovered; one of the 8
channels of conv layer 2 died), and ReLU still trains (18.8% validation error). At lr 0.1 ReLU does not die:
it ends with 0% dead and trains (loss 0.65, 22.9% validation error), better than leaky ReLU at the same rate
(5.4% always-negative: three of the 8 channels of conv layer 2; loss 0.67, 30.5%); ELU at lr 0.1 diverges
(non-finite loss at step 8). Sigmoid's failure reproduces; dying ReLUs barely do (one channel of 120 at lr
0.03, none at lr 0.1), and leaky ReLU's gain is mixed (ahead of ReLU at lr 0.03, 14.8% vs 18.8%, behind it at
lr 0.1, 30.5% vs 22.9%; one seed); nor does ReLU converge faster than (Xavier-initialized) tanh: both take 7
epochs, and ReLU ends at a slightly lower training loss (0.45 vs 0.50) but the higher validation error.
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, first_epoch, run, write_results
from experiments._nets import ConvNet, mnist_splits
from jaxnets import init, train
from jaxnets import nn as jnn

CONFIG = dict(
    preset="default", seed=0, n_train=1500, n_val=1000, probe_size=500,
    widths=(8, 16, 32), blocks_per_stage=2,
    activations=("sigmoid", "tanh", "relu", "leaky_relu", "elu"),
    init={"sigmoid": "xavier", "tanh": "xavier", "relu": "he", "leaky_relu": "he", "elu": "he"},
    leaky_slope=0.01,  # the slope of get_activation("leaky_relu"); He's gain uses the same
    optimizer="sgd", lr=0.03, momentum=0.9, epochs=10, batch_size=50, target_loss=1.0,
    # the ReLU family once more at a large learning rate, where ReLUs die (leaky ReLU / ELU keep a gradient)
    high_lr=0.1, high_lr_activations=("relu", "leaky_relu", "elu"),
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, widths=(32, 64, 128), blocks_per_stage=4, epochs=30)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=128, n_val=64, probe_size=32, widths=(4, 8, 8),
                   blocks_per_stage=1, activations=("relu",), high_lr_activations=("elu",),
                   epochs=1, batch_size=32)


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


def dead_fractions(state: train.TrainState, images: np.ndarray) -> dict:
    """Per conv layer: fraction of channels (and of channel x position units) that are <= 0 for every example."""
    per_channel, per_position = [], []
    for z in pre_activations(state, images):
        never_positive = np.asarray(jnp.all(z <= 0, axis=0))  # [H, W, C]
        per_position.append(float(never_positive.mean()))
        per_channel.append(float(never_positive.all(axis=(0, 1)).mean()))
    return {"per_layer": per_channel, "per_layer_positions": per_position,
            "all_layers": float(np.mean(per_channel))}


def train_one(activation: str, lr: float, config: dict, train_set: dict, val_set: dict, probe: np.ndarray) -> dict:
    model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"], norm=None,
                    activation=activation, kernel_init=initializer(activation, config))
    tx = train.optimizer(config["optimizer"], learning_rate=lr, momentum=config["momentum"])
    # fit initialises with TrainState.create(model, tx, one example, seed): the same parameters as here.
    initial = train.TrainState.create(model, tx, train_set["image"][:1], config["seed"])
    row = {"activation": activation, "lr": lr, "init": config["init"][activation],
           "dead_at_init": dead_fractions(initial, probe)}
    started = time.perf_counter()
    try:
        state, history = train.fit(model, train_set, val_data=val_set, epochs=config["epochs"],
                                   batch_size=config["batch_size"], optimizer=tx, seed=config["seed"],
                                   progress=False)
    except train.NonFiniteLossError as error:  # a result to record, not a crash
        print(f"{activation} lr {lr}: {error}", flush=True)
        return dict(row, diverged=True)
    steps_per_epoch = len(train_set["label"]) // config["batch_size"]
    reached = first_epoch(history.train_loss, config["target_loss"], strict=True)
    row.update(diverged=False, train_loss=history.train_loss, train_error=history.train_error,
               val_loss=history.val_loss, val_error=history.val_error, epochs_to_target=reached,
               steps_to_target=None if reached is None else reached * steps_per_epoch,
               dead_after_training=dead_fractions(state, probe), seconds=time.perf_counter() - started)
    print(f"{activation:10s} lr {lr:<5g} loss {' '.join(f'{v:.3f}' for v in history.train_loss)}  val err "
          f"{history.val_error[-1]:.3f}  epochs to {config['target_loss']}: {row['epochs_to_target']}  dead "
          f"{row['dead_at_init']['all_layers']:.3f} -> {row['dead_after_training']['all_layers']:.3f} "
          f"[{row['seconds']:.0f} s]", flush=True)
    return row


def main(config=CONFIG, *, out=None):
    """Train the same plain CNN with each activation; loss curves and dead-unit fractions."""
    started = time.perf_counter()
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["seed"])
    probe = val_set["image"][:config["probe_size"]]  # a held-out batch for the dead-unit counts
    plan = [(a, config["lr"]) for a in config["activations"]]
    plan += [(a, config["high_lr"]) for a in config["high_lr_activations"]]
    runs = {f"{a} lr {lr:g}": train_one(a, lr, config, train_set, val_set, probe) for a, lr in plan}
    results = {"n_train": len(train_set["label"]), "n_val": len(val_set["label"]), "probe_size": len(probe),
               "depth": ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"]).depth,
               "runs": runs}
    return write_results(__file__, config, results, figures={"activation_functions": plot(runs, config)},
                         out=out, started=started)


def plot(runs: dict, config: dict):
    fig, (ax_loss, ax_val, ax_dead) = plt.subplots(1, 3, figsize=(16, 4.8))
    names = dict.fromkeys([*config["activations"], *config["high_lr_activations"]])
    colors = {a: f"C{i}" for i, a in enumerate(names)}
    for name, r in runs.items():
        if r["diverged"]:
            continue
        style = "-" if r["lr"] == config["lr"] else "--"
        epochs = np.arange(1, len(r["train_loss"]) + 1)
        ax_loss.plot(epochs, r["train_loss"], "o" + style, color=colors[r["activation"]],
                     label=f"{name} ({r['init']})")
        ax_val.plot(epochs, r["val_error"], "o" + style, color=colors[r["activation"]], label=name)
        if r["activation"] in ("relu", "leaky_relu", "elu"):
            dead = r["dead_after_training"]["per_layer"]
            ax_dead.plot(np.arange(1, len(dead) + 1), dead, "s" + style, color=colors[r["activation"]],
                         label=f"{name}, trained")
    for a in ("relu", "leaky_relu", "elu"):
        name = f"{a} lr {config['lr']:g}"
        if name in runs:
            dead = runs[name]["dead_at_init"]["per_layer"]
            ax_dead.plot(np.arange(1, len(dead) + 1), dead, ":", color=colors[a], label=f"{a}, at init")
    ax_loss.axhline(config["target_loss"], color="k", ls=":", lw=1, label="target")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training loss (mean over the epoch)",
                title="convergence (no normalization; dashed: large lr)")
    ax_val.set(xlabel="epoch", ylabel="validation error", title="validation error")
    ax_dead.set(xlabel="conv layer", ylabel=f"fraction of channels <= 0 on all {config['probe_size']} probe digits",
                title="dead ReLUs (leaky ReLU / ELU: always-negative)")
    return finish_figure(fig, (ax_loss, ax_val, ax_dead), legend={"fontsize": 7})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
