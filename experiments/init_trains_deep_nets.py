"""Which weight initializations let a deep plain CNN train at all?

Claim (000_3cfbcdab51860f78.txt, Concept 6.35; 002_de9ed5bb46c1eb74.txt, "Kaiming initialization"):
"Initializing weights with the proper scaling is sometimes necessary to get the network to train, as you
will see with the VGG network. However, so long as the network gets trained, the choice of initialization
does not seem to affect the final performance." The variance argument (Definitions 6.32-6.36): a layer
multiplies the second moment of its input by ``fan_in Var(w)``, and ReLU halves it, so N(0, 1) explodes,
N(0, 1e-4) vanishes, LeCun (1/fan_in) and Xavier (2/(fan_in + fan_out)) lose a factor 2 per ReLU layer,
and He (2/fan_in) keeps it. PyTorch's default (``init.pytorch_default``: U(+-1/sqrt(fan_in)), variance
1/(3 fan_in)) loses a factor 6 per ReLU layer.

Setup: ``experiments._nets.ConvNet`` without normalization or residual connections (VGG-style: 3x3 convs,
max-pooling between stages, global average pooling, a dense head), ``widths=(8, 16, 32)`` with
``blocks_per_stage=4``: 14 weight layers. Every conv and the head get the initializer under test; the biases
are PyTorch's default (U(+-1/sqrt(fan_in)), ``ConvNet`` does not expose them) in every run. The MNIST
sample (1,024 training digits, 500 held-out), pixels standardised with MNIST's mean and std (the theory
assumes unit-variance inputs), SGD with momentum 0.9 at one learning rate for every initializer, batch
32, 12 epochs (384 steps). Before training, one forward/backward pass on 256 training digits records the
loss, the logits' standard deviation and the gradient norm of every layer's kernel. A run that produces a
non-finite loss (``jaxnets.train.NonFiniteLossError``) is recorded as "diverged" with its step; a run that
ends with a validation error above ``trained_val_error`` "did not train".

Run: python -m experiments.init_trains_deep_nets  ->  experiments/results/init_trains_deep_nets/
Result (default config, one seed, 102 s wall on a quiet 2-core CPU): only He trains. He: kernel gradients
of similar size in every layer at init (norm 2.2 at layer 1, 7.5 at layer 13, 2.7 at the head), a plateau
at ln 10 for ~100 steps, then training loss 0.89 and validation error 0.34 after 384 steps. LeCun and
Xavier: the gradient reaching layer 1 is 178x and 112x smaller than the head's; both sit on the plateau
(training loss 2.30), LeCun just leaving it at the end (2.27, validation error 0.81), Xavier not (0.90).
PyTorch's default: 7e4x smaller at layer 1, stuck (0.90). N(0, 1e-4): 3e13x smaller, stuck (0.90). N(0, 1):
loss at init 1.5e12 (logit std 7.7e11), gradients ~1e12 in every layer, loss non-finite at step 30. The
claim's second half (once trained, the init does not change the final performance) is not tested: only He
trains within this budget.
Details: experiments/README.md.
"""
from __future__ import annotations

import time

import jax
import matplotlib.pyplot as plt
import numpy as np

from experiments._common import finish_figure, run, write_results
from experiments._nets import ConvNet, at_init, mnist_splits, standardize, train_one
from jaxnets import init, train

CONFIG = dict(
    preset="default", seed=0, seeds=(0,), n_train=1024, n_val=500,
    widths=(8, 16, 32), blocks_per_stage=4, activations=("relu",),
    inits=("normal_1", "normal_1e-4", "lecun", "xavier", "he", "pytorch"),
    input_mean=0.1307, input_std=0.3081,  # MNIST's pixel mean and std on the [0, 1] scale
    lr=0.01, momentum=0.9, batch_size=32, epochs=12,
    trained_val_error=0.5,  # chance is 0.9
    diagnostic_batch=256,
)
FULL_CONFIG = dict(CONFIG, preset="full", seeds=(0, 1, 2), n_train=4000, n_val=1000, widths=(16, 32, 64),
                   blocks_per_stage=6, activations=("relu", "tanh"), epochs=30)
TINY_CONFIG = dict(CONFIG, preset="tiny", n_train=128, n_val=64, widths=(4, 4, 4), blocks_per_stage=1,
                   inits=("normal_1", "he"), epochs=1, diagnostic_batch=32)

# name -> (label, initializer). N(0, s^2) ignores the fan; the others are jaxnets.init's.
INITS = {
    "normal_1": ("N(0, 1)", jax.nn.initializers.normal(1.0)),
    "normal_1e-4": ("N(0, 1e-4)", jax.nn.initializers.normal(1e-2)),
    "lecun": ("LeCun", init.lecun_normal()),
    "xavier": ("Xavier", init.xavier_normal()),
    "he": ("He", init.he_normal()),
    "pytorch": ("PyTorch default", init.pytorch_default()),
}
COLORS = {"normal_1": "C3", "normal_1e-4": "C7", "lecun": "C0", "xavier": "C9", "he": "C2", "pytorch": "C1"}


def main(config=CONFIG, *, out=None):
    """Train the plain deep CNN once per initializer (and activation, seed); record curves and diagnostics."""
    started = time.perf_counter()
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["seed"])
    preprocess = standardize(config["input_mean"], config["input_std"])
    tx = train.optimizer("sgd", learning_rate=config["lr"], momentum=config["momentum"])  # one object: fit
    # reuses the compiled step for every seed of a model
    diag = {k: v[:config["diagnostic_batch"]] for k, v in train_set.items()}
    steps_per_epoch = config["n_train"] // config["batch_size"]
    results = {"steps_per_epoch": steps_per_epoch, "runs": {}}
    for activation in config["activations"]:
        for name in config["inits"]:
            label, kernel_init = INITS[name]
            model = ConvNet(widths=tuple(config["widths"]), blocks_per_stage=config["blocks_per_stage"],
                            activation=activation, kernel_init=kernel_init)
            runs = []
            for seed in config["seeds"]:
                fresh = train.TrainState.create(model, tx, train_set["image"][:1], seed)  # fit's initial state
                before = train.evaluate(fresh, val_set, preprocess=preprocess)
                row = {"at_init": at_init(fresh, diag, preprocess), "val_loss_at_init": before["loss"],
                       "val_error_at_init": 1.0 - before["accuracy"],
                       **train_one(model, config, tx, preprocess, train_set, val_set, seed)[0]}
                runs.append(row)
                a = row["at_init"]
                print(f"{activation:5s} {label:16s} seed {seed}: {row['status']:13s} "
                      f"(diverged at step {row['diverged_at_step']}) loss at init {a['loss']:9.3g}, "
                      f"logit std {a['logit_std']:8.3g}, grad norm layer 1 / last {a['grad_norm_first_over_last']}; "
                      f"train loss {[round(v, 3) for v in row['train_loss']]}, val error {row['final_val_error']} "
                      f"[{row['seconds']:.0f} s]", flush=True)
            results["runs"][f"{activation}/{name}"] = {"activation": activation, "init": name, "label": label,
                                                       "depth": model.depth, "seeds": runs}
    results["summary"] = {key: {"statuses": [r["status"] for r in v["seeds"]],
                                "final_val_error": [r["final_val_error"] for r in v["seeds"]],
                                "final_train_loss": [r["train_loss"][-1] if r["train_loss"] else None
                                                     for r in v["seeds"]],
                                "diverged_at_step": [r["diverged_at_step"] for r in v["seeds"]]}
                          for key, v in results["runs"].items()}
    return write_results(__file__, config, results, figures={"loss_curves": plot(results, config)}, out=out,
                         started=started)


def plot(results: dict, config: dict):
    """Per activation: training loss and validation error against steps (step 0: the initial parameters)."""
    activations = config["activations"]
    fig, axes = plt.subplots(len(activations), 2, figsize=(13, 4.8 * len(activations)), squeeze=False)
    spe = results["steps_per_epoch"]
    ceiling = 3.0  # losses above it (N(0, 1) at init) are drawn at the top edge
    for row, activation in zip(axes, activations):
        for key, entry in results["runs"].items():
            if entry["activation"] != activation:
                continue
            color = COLORS[entry["init"]]
            for i, r in enumerate(entry["seeds"]):
                steps = np.arange(len(r["train_loss"]) + 1) * spe
                if r["status"] == "diverged":
                    text = f"diverged at step {r['diverged_at_step']}"
                else:
                    text = f"{r['status']}, val error {r['final_val_error']:.3f}"
                label = f"{entry['label']}: {text} (loss at init {r['at_init']['loss']:.3g})" if i == 0 else None
                loss = [r["at_init"]["loss"], *r["train_loss"]]
                row[0].plot(steps, np.minimum(loss, ceiling), "o-", ms=3, color=color, alpha=0.9, label=label)
                row[1].plot(steps, [r["val_error_at_init"], *r["val_error"]], "o-", ms=3,
                            color=color, alpha=0.9)
                if r["status"] == "diverged":
                    for ax, y in ((row[0], ceiling), (row[1], 1.0)):
                        ax.plot([r["diverged_at_step"]], [y], "X", ms=12, color=color)
        row[0].axhline(np.log(10), color="k", ls=":", lw=1, label="ln 10 (uniform prediction)")
        row[0].set(xlabel="SGD step", ylabel="training loss (epoch mean; step 0: at init)", ylim=(0, ceiling + 0.1),
                   title=f"{activation}: training loss (X: non-finite loss)")
        row[1].axhline(0.9, color="k", ls=":", lw=1)
        row[1].set(xlabel="SGD step", ylabel="validation error", ylim=(0, 1.02),
                   title=f"{activation}: validation error after each epoch")
        row[0].legend(fontsize=7, loc="lower left")
    return finish_figure(fig, axes.flat,
                         suptitle=f"Plain {results['runs'][next(iter(results['runs']))]['depth']}-layer CNN (no BN, "
                                  f"no residual) on {config['n_train']} MNIST digits, SGD lr {config['lr']} momentum "
                                  f"{config['momentum']}, batch {config['batch_size']}")


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
