"""Symmetry breaking: with a constant (or zero) initialisation every hidden unit gets the same gradient, so the
units stay identical and the net cannot use its width; a random initialisation breaks the symmetry.

Claim (/work/shared/reference/000_3cfbcdab51860f78.txt, Concept 6.30 "Importance of Weight Initialization",
quoting LeCun et al. 1998: "Weights should be chosen randomly ..."; the same slide in 001_f4e8d95f5b8d410b.txt):
the initial weights must be random. The reason, tested here: in a layer whose units start with the same
incoming and outgoing weights, every unit computes the same activation and receives the same gradient, so
gradient descent keeps them equal forever; a width-H layer trains like a width-1 layer. All zeros is the
extreme case: the hidden activations are 0 and so is every hidden gradient (ReLU(0) = 0, and the output
layer's zero weights send nothing back), so only the output bias learns.

Setup: ``models.create("mlp", hidden=(64, 64))`` (784-64-64-10, ReLU, 55,050 parameters) on a stratified
1,000 of the MNIST sample's training digits (pixels in [0, 1]), validated on the 1,000 held-out digits; SGD
momentum 0.9 (``train.optimizer``), learning rate 0.05 cosine-annealed to 0 over 20 epochs of batch 50 (400
steps), so the final weights do not hang on the last epoch's step size (the MLP has no BatchNorm). Three
initialisations: ``random`` (PyTorch's default, U(+-1/sqrt(fan_in)) for kernels and biases), ``constant``
(every kernel entry of a layer 1/fan_in, so each unit starts as the mean of its inputs; biases 0) and
``zero`` (every parameter 0). Protocol (``experiments/_protocol.py``): 5 seeds, paired: seed s gives every
initialisation the same batch order (and ``random`` its weights; the constant ones have no randomness left).
Measured after every epoch: per hidden layer, the spread of the hidden units -- unit j's parameters are its
incoming kernel column, its bias and its outgoing kernel row, and the spread is max_j max |theta_j - theta_0|
(exactly 0 when every unit is bitwise identical) -- for the weights and for the gradient on a fixed batch of
256 training digits, and the number of distinct units (``np.unique`` over the units' parameter vectors).
Verdicts: (1) identical units: reproduced if the spread is exactly 0 (float equality) in every layer, epoch and
seed of ``constant`` and ``zero`` and nonzero in every one of ``random``; (2) random init trains to lower
validation error than constant init, and than zero init, by at least ``min_effect`` = 5 points (the notes give
no size; "cannot use its width" means a large gap), judged on the paired differences (``_protocol.verdict``).

Run: python -m experiments.symmetry_breaking  ->  experiments/results/symmetry_breaking/
Result (default config, 18 s wall on the shared 2-core CPU, load average 4.6-5.3; the run before it, 31 s,
gave the same numbers bit for bit): identical units reproduced: with constant and with zero init every hidden
unit of both layers is bitwise identical to unit 0, weights and gradients, at init and after each of the 20
epochs, in all 5 seeds (spread exactly 0.0, 1 distinct unit of 64); with random init the spread is never 0
(weights >= 0.24, gradients >= 0.0037; 64 distinct units' weights in every layer and epoch; the second
layer's gradients have 52-64 distinct vectors: units inactive on the whole 256-digit batch share a zero
gradient). Final validation error: random 11.0 +- 0.2%, constant 72.1 +- 0.3%, zero 90.0 +- 0.0% (training
error 0.1 +- 0.0%, 67.6 +- 0.3%, 90.0 +- 0.0%). Random minus constant -61.1 +- 0.2 points (95% interval -61.7
to -60.4), random minus zero -79.0 +- 0.2 points (-79.4 to -78.5): both reproduced (min_effect 5 points).
The constant-init net does learn (training loss 1.59, 67.6% training error), as a 784-1-1-10 net would; the
zero-init net learns only its output bias (loss ln 10).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import _protocol as protocol
from experiments._common import finish_figure, machine_load, run, write_results
from experiments._nets import mnist_splits, train_run
from jaxnets import layers, models, train
from jaxnets.data import augment

CONFIG = dict(
    preset="default", seeds=protocol.SEEDS, data_seed=0, n_train=1000, n_val=1000, hidden=(64, 64),
    activation="relu", inits=("random", "constant", "zero"), epochs=20, batch_size=50, optimizer="sgd",
    lr=0.05, momentum=0.9, schedule="cosine to 0 over all steps", grad_batch=256,
    min_effect=0.05,  # 5 points of validation error: the smallest gap "cannot use its width" describes
    evaluation="final weights after a cosine schedule to 0 (no BatchNorm)",
)
FULL_CONFIG = dict(CONFIG, preset="full", n_train=None, n_val=None, hidden=(512, 256), epochs=40)
TINY_CONFIG = dict(CONFIG, preset="tiny", seeds=(0, 1), n_train=200, n_val=200, hidden=(16, 16), epochs=1,
                   grad_batch=64)


# ----------------------------------------------------------------------------------------------
# initialisations and the units' spread
# ----------------------------------------------------------------------------------------------
def initial_params(random_params: dict, name: str) -> dict:
    """The parameters of initialisation ``name`` built from the random ones (their shapes and scale).

    ``random``: unchanged. ``constant``: every kernel entry 1/fan_in (each unit starts as the mean of its
    inputs), biases 0. ``zero``: every parameter 0. (A constant equal to the random init's standard deviation,
    1/sqrt(3 fan_in), adds the 64 equal terms coherently; in a trial run the first epoch's loss was 8.7 and the
    net then sat at ln 10 = 2.30 for good. 1/fan_in keeps the forward signal at the input's scale.)
    """
    if name == "random":
        return random_params

    def fill(path, p):
        leaf = path[-1].key
        if name == "zero" or leaf == "bias":
            return jnp.zeros_like(p)
        return jnp.full_like(p, 1.0 / p.shape[0])

    return jax.tree_util.tree_map_with_path(fill, random_params)


def hidden_layers(params: dict) -> list[tuple[str, str]]:
    """(hidden dense layer, the layer after it) in forward order: ("dense_0", "dense_1"), ..., ("dense_k", "head")."""
    names = sorted((k for k in params if k.startswith("dense_")), key=lambda k: int(k.split("_")[1]))
    return list(zip(names, names[1:] + ["head"]))


def unit_vectors(tree: dict, layer: str, after: str) -> np.ndarray:
    """Per hidden unit j of ``layer``: [its incoming kernel column, its bias, its outgoing kernel row]:
    ``[units, fan_in + 1 + fan_out]``, from the parameters or from their gradients."""
    k = np.asarray(tree[layer]["kernel"])
    return np.concatenate([k.T, np.asarray(tree[layer]["bias"])[:, None], np.asarray(tree[after]["kernel"])], axis=1)


def unit_spread(tree: dict) -> dict:
    """Per hidden layer: ``spread`` = max_j max |u_j - u_0| (0.0 exactly iff every unit is bitwise equal to unit
    0), ``relative`` = spread / max |u|, and ``distinct`` = the number of distinct unit vectors."""
    out = {}
    for layer, after in hidden_layers(tree):
        u = unit_vectors(tree, layer, after)
        spread = float(np.max(np.abs(u - u[:1])))
        scale = float(np.max(np.abs(u)))
        out[layer] = {"spread": spread, "relative": spread / scale if scale > 0 else 0.0,
                      "distinct": len(np.unique(u, axis=0))}
    return out


def make_grad(apply_fn):
    """The jitted gradient of the mean cross-entropy on one batch, w.r.t. the parameters."""
    def loss(params, x, y):
        return layers.cross_entropy(apply_fn({"params": params}, x, train=False), y)
    return jax.jit(jax.grad(loss))


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------
def main(config=CONFIG, *, out=None):
    """Constant, zero and random initialisation of one MLP: the units' spread and the final errors."""
    started = time.perf_counter()
    load_start = machine_load()
    train_set, val_set = mnist_splits(config["n_train"], config["n_val"], seed=config["data_seed"])
    train_set, val_set = ({"image": np.asarray(augment.to_float(d["image"])), "label": d["label"]}
                          for d in (train_set, val_set))
    model = models.create("mlp", hidden=tuple(config["hidden"]), activation=config["activation"])
    steps_per_epoch = len(train_set["label"]) // config["batch_size"]
    schedule = train.schedules.cosine(config["lr"], config["epochs"] * steps_per_epoch)
    tx = train.optimizer(config["optimizer"], learning_rate=schedule, momentum=config["momentum"])
    step = jax.jit(train.make_train_step())
    grad_fn = make_grad(model.apply)
    gx, gy = train_set["image"][:config["grad_batch"]], train_set["label"][:config["grad_batch"]]
    sample = train_set["image"][:1]

    runs = {name: [] for name in config["inits"]}
    for seed in config["seeds"]:
        random_params = train.TrainState.create(model, tx, sample, seed).params
        for name in config["inits"]:
            t0 = time.perf_counter()
            state = train.TrainState.create(model, tx, sample, seed,
                                            variables={"params": initial_params(random_params, name)})
            track = []

            def record(epoch, s, track=track):
                track.append({"epoch": epoch, "weights": unit_spread(jax.device_get(s.params)),
                              "grads": unit_spread(jax.device_get(grad_fn(s.params, gx, gy)))})

            record(0, state)
            state, rec = train_run(state, train_set, val_set, epochs=config["epochs"],
                                   batch_size=config["batch_size"], seed=seed, step=step, on_epoch_end=record)
            ev = train.evaluate(state, train_set, batch_size=500)
            runs[name].append({"seed": seed, "val_error": rec["val_error"], "train_loss": rec["train_loss"],
                               "final_val_error": rec["final_val_error"], "final_train_error": 1 - ev["accuracy"],
                               "final_train_loss": ev["loss"], "diverged": rec["diverged"], "track": track,
                               "seconds": time.perf_counter() - t0})
            print(f"seed {seed} {name:8s} val error {rec['final_val_error']:.3f}  train error "
                  f"{1 - ev['accuracy']:.3f}  distinct units {[v['distinct'] for v in track[-1]['weights'].values()]}"
                  f"  [{time.perf_counter() - t0:.1f} s]", flush=True)

    results = summarize(config, runs)
    results["machine_load"] = {"start": load_start, "end": machine_load()}
    figures = {"symmetry_breaking": plot(config, runs)}
    return write_results(__file__, config, results, figures=figures, out=out, started=started)


def summarize(config, runs) -> dict:
    """Per initialisation: mean +- sem of the final errors; the units' spread; the paired verdicts."""
    per_init = {}
    for name, rows in runs.items():
        layers_ = list(rows[0]["track"][0]["weights"])
        per_init[name] = {
            "final_val_error": protocol.estimate([r["final_val_error"] for r in rows]),
            "final_train_error": protocol.estimate([r["final_train_error"] for r in rows]),
            "final_train_loss": protocol.estimate([r["final_train_loss"] for r in rows]),
            "val_error_text": protocol.describe([r["final_val_error"] for r in rows], scale=100, unit="%"),
            "train_error_text": protocol.describe([r["final_train_error"] for r in rows], scale=100, unit="%"),
            # over every seed and epoch (init included): the largest and smallest spread, the distinct units
            "units": {layer: {
                kind: {"max_spread": max(t[kind][layer]["spread"] for r in rows for t in r["track"]),
                       "min_spread": min(t[kind][layer]["spread"] for r in rows for t in r["track"]),
                       "min_relative_spread": min(t[kind][layer]["relative"] for r in rows for t in r["track"]),
                       "final_relative_spread": protocol.estimate([r["track"][-1][kind][layer]["relative"]
                                                                   for r in rows]),
                       "distinct_units_min": min(t[kind][layer]["distinct"] for r in rows for t in r["track"]),
                       "distinct_units_max": max(t[kind][layer]["distinct"] for r in rows for t in r["track"])}
                for kind in ("weights", "grads")} for layer in layers_},
            "diverged": sum(r["diverged"] for r in rows),
        }
    symmetric = [n for n in ("constant", "zero") if n in runs]
    identical = all(u[kind]["max_spread"] == 0.0 for n in symmetric for u in per_init[n]["units"].values()
                    for kind in ("weights", "grads"))
    # zero init: the hidden gradients are exactly 0, so "nonzero for random" is asked of random only
    broken = all(u[kind]["min_spread"] > 0.0 for u in per_init["random"]["units"].values()
                 for kind in ("weights", "grads"))
    claims = {"identical_units": {
        "claim": "constant/zero init: every hidden unit bitwise identical (weights and gradients) at every epoch "
                 "and seed; random init: never",
        "constant_and_zero_spread_exactly_0": identical, "random_spread_always_nonzero": broken,
        "verdict": "reproduced" if identical and broken else "not reproduced"}}
    for other in symmetric:
        d = protocol.paired([r["final_val_error"] for r in runs[other]], [r["final_val_error"] for r in runs["random"]])
        claims[f"random_beats_{other}"] = {
            "claim": f"random init trains to a lower final validation error than {other} init",
            "difference": d, "difference_text": protocol.describe(d, scale=100, unit=" points"),
            "min_effect": config["min_effect"],
            "verdict": protocol.verdict(d, direction="lower", min_effect=config["min_effect"])}
    return {"per_init": per_init, "claims": claims,
            "runs": {n: [{k: v for k, v in r.items()} for r in rows] for n, rows in runs.items()}}


def plot(config, runs):
    """Validation error per epoch (mean +- sem band), distinct hidden units and the gradient spread."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    epochs = np.arange(1, config["epochs"] + 1)
    for name, rows in runs.items():
        protocol.band(axes[0], epochs, [r["val_error"] for r in rows], label=name, scale=100)
    axes[0].set(xlabel="epoch", ylabel="validation error (%)", ylim=(0, 100),
                title=f"validation error, mean +- sem over {len(config['seeds'])} seeds")
    all_epochs = np.arange(0, config["epochs"] + 1)
    first = next(iter(runs.values()))[0]["track"][0]["weights"]
    for name, rows in runs.items():
        for layer, style in zip(first, ("-", "--", ":")):
            protocol.band(axes[1], all_epochs, [[t["weights"][layer]["distinct"] for t in r["track"]] for r in rows],
                          label=f"{name}, {layer}", linestyle=style)
    axes[1].set(xlabel="epoch (0: init)", ylabel="distinct hidden units", yscale="log",
                title=f"distinct hidden units (width {config['hidden'][0]})")
    for layer, style in zip(first, ("-", "--", ":")):
        protocol.band(axes[2], all_epochs, [[t["grads"][layer]["spread"] for t in r["track"]]
                                            for r in runs["random"]], label=f"random, {layer}", linestyle=style)
    axes[2].set(xlabel="epoch (0: init)", ylabel="max_j max |g_j - g_0|", yscale="log",
                title="gradient spread between units\n(constant and zero init: exactly 0, not drawable)")
    return finish_figure(fig, axes, legend={"fontsize": 7})


if __name__ == "__main__":
    run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)
