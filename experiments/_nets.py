"""The one configurable CNN the experiments vary, the MNIST-sample splits they train on, and the training
loops several experiments share (``train_one``: ``fit`` recording a divergence; ``train_run``: a loop with a
traced learning rate).

``ConvNet`` is a small VGG-style network for 28 x 28 digits whose every ingredient is a switch: the
normalization (none / BatchNorm / GroupNorm), the activation, dropout, the weight initializer, the depth,
and residual connections (with ``zero_init_residual``). One network, so that an experiment changes exactly
the ingredient it asks about and nothing else.

    stem:   conv3x3(widths[0]) -> norm -> act
    stage s (s = 0 .. len(widths) - 1), blocks_per_stage blocks at width widths[s]:
        plain block:     conv3x3 -> norm -> act
        residual block:  x + conv3x3 -> norm -> act -> conv3x3 -> norm   then act   (He et al. 2016, v1;
                         a 1x1 conv + norm projection where the width changes)
        then max-pool 2x2 between stages (28 -> 14 -> 7 -> 3)
    head:   global average pool -> dropout -> dense(num_classes)

Dropout, when on, is also applied after every block's activation (``dropout`` rate; the head's too), or
only before the head with ``dropout_at="head"``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets import data, init, layers, models, train
from jaxnets import nn as jnn
from jaxnets.data import augment

NORMS = (None, "batch", "group")
DROPOUT_PLACEMENTS = ("blocks", "head")


class ConvNet(nn.Module):
    """VGG-style or residual CNN for [N, 28, 28, 1] images -> logits [N, num_classes].

    Attributes:
      widths: channels of each stage (stages are separated by 2x2 max-pooling).
      blocks_per_stage: blocks per stage; a plain block has one conv, a residual block two, so a plain and
        a residual net with the same ``blocks_per_stage`` differ in depth by a factor of two: compare them
        at equal numbers of conv layers (``depth`` below).
      norm: None, "batch" (``jaxnets.nn.BatchNorm``: PyTorch momentum 0.1) or "group" (``GroupNorm`` with
        ``groups`` groups).
      activation: a name for ``jaxnets.layers.get_activation`` ("relu", "tanh", "sigmoid", "leaky_relu",
        "elu", ...).
      dropout: drop rate after each block and before the head (0: none).
      dropout_at: where the dropout layers are: "blocks" (after every block's activation, so in front of
        the next block's norm, and before the head) or "head" (only before the head).
      residual: residual blocks (two convs and an identity or projection shortcut) instead of plain ones.
      zero_init_residual: start each residual branch's last norm scale at 0 (each block starts as the
        identity; Goyal et al. 2017). Needs ``residual`` and a norm.
      kernel_init: initializer for every conv and dense kernel; None = PyTorch's default
        (``init.pytorch_default``: U(+-1/sqrt(fan_in)), i.e. He-uniform with a = sqrt(5)).
      num_classes: outputs.
      axis_name: passed to every BatchNorm (synchronised statistics under shard_map / pmap).
    PyTorch equivalent: the same layers from torch.nn in the same order.
    """
    widths: Sequence[int] = (16, 32, 64)
    blocks_per_stage: int = 1
    norm: str | None = None
    groups: int = 4
    activation: str = "relu"
    dropout: float = 0.0
    dropout_at: str = "blocks"
    residual: bool = False
    zero_init_residual: bool = False
    kernel_init: Callable | None = None
    num_classes: int = 10
    axis_name: str | None = None

    @property
    def depth(self) -> int:
        """Number of weight layers: the stem, the convs of every block and the dense head."""
        return 2 + len(self.widths) * self.blocks_per_stage * (2 if self.residual else 1)

    def _norm(self, x, train: bool, zero: bool = False):
        if self.norm is None:
            return x
        scale_init = init.zeros if zero else init.ones
        if self.norm == "batch":
            return jnn.BatchNorm(axis_name=self.axis_name, scale_init=scale_init)(x, train=train)
        return jnn.GroupNorm(groups=self.groups)(x)

    def _conv(self, features: int, kernel: int = 3):
        # A conv feeding a norm needs no bias (the norm's shift replaces it), as in torchvision.
        return jnn.Conv(features, kernel, padding=kernel // 2, use_bias=self.norm is None,
                        kernel_init=self.kernel_init)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.norm not in NORMS:
            raise ValueError(f"ConvNet: norm must be one of {NORMS}, got {self.norm!r}.")
        if self.zero_init_residual and not (self.residual and self.norm):
            raise ValueError("ConvNet: zero_init_residual needs residual=True and a norm, got "
                             f"residual={self.residual}, norm={self.norm!r}.")
        if self.dropout_at not in DROPOUT_PLACEMENTS:
            raise ValueError(f"ConvNet: dropout_at must be one of {DROPOUT_PLACEMENTS}, got {self.dropout_at!r}.")
        act = jnn.Activation(self.activation)
        drop = jnn.Dropout(self.dropout)
        x = act(self._norm(self._conv(self.widths[0])(x), train))
        for s, width in enumerate(self.widths):
            if s > 0:
                x = jnn.MaxPool(2)(x)
            for _ in range(self.blocks_per_stage):
                if self.residual:
                    y = act(self._norm(self._conv(width)(x), train))
                    y = self._norm(self._conv(width)(y), train, zero=self.zero_init_residual)
                    shortcut = x if x.shape[-1] == width else self._norm(self._conv(width, 1)(x), train)
                    x = act(y + shortcut)
                else:
                    x = act(self._norm(self._conv(width)(x), train))
                if self.dropout_at == "blocks":
                    x = drop(x, train=train)
        x = drop(jnn.GlobalAvgPool()(x), train=train)
        return jnn.Dense(self.num_classes, kernel_init=self.kernel_init)(x)


def mnist_splits(n_train: int | None = None, n_val: int | None = None, *, seed: int = 0):
    """The MNIST sample as (train, val) dicts of uint8 images [N, 28, 28, 1] and int32 labels [N].

    The 5,000 digits are split 4,000 / 1,000 (stratified, ``seed=0``: the same held-out digits in every
    experiment); ``n_train`` / ``n_val`` take a stratified subset of each (drawn with ``seed``).
    """
    train, val = data.split(data.mnist_sample(), fraction=0.2, seed=0)
    return _subset(train, n_train, seed), _subset(val, n_val, seed)


def _subset(arrays: dict, n: int | None, seed: int) -> dict:
    total = len(arrays["label"])
    if n is None or n >= total:
        return arrays
    if n < 10:
        raise ValueError(f"mnist_splits: need at least 10 examples per split (one per class), got {n}.")
    kept, _ = data.split(arrays, fraction=1 - n / total, seed=seed)
    return {k: np.asarray(v) for k, v in kept.items()}


# ----------------------------------------------------------------------------------------------
# preprocessing, diagnostics at initialization, and fit with divergence recorded as a result
# (init_trains_deep_nets.py, batchnorm_effect.py)
# ----------------------------------------------------------------------------------------------
def standardize(mean: float, std: float):
    """The ``preprocess`` for ``fit``: uint8 pixels -> [0, 1] -> ``(x - mean) / std``."""
    return lambda images: augment.normalize(augment.to_float(images), mean, std)


def layer_order(params: dict) -> list[str]:
    """The weight layers in forward order: Conv_0, Conv_1, ..., Conv_12, Dense_0."""
    convs = sorted((k for k in params if k.startswith("Conv_")), key=lambda k: int(k.split("_")[1]))
    return convs + sorted(k for k in params if k.startswith("Dense_"))


def at_init(state: train.TrainState, batch: dict, preprocess) -> dict:
    """Loss, logit std and per-layer kernel gradient norms of the initial parameters on one batch.

    In training mode, as the first SGD step sees them: a BatchNorm normalises with the batch's statistics
    (in eval mode it would use the initial running ones, mean 0 and variance 1, i.e. no normalization).
    """
    x = preprocess(batch["image"])

    def loss_fn(params):
        stats = {"batch_stats": state.batch_stats} if state.batch_stats else {}
        logits, _ = state.apply_fn({"params": params, **stats}, x, train=True, mutable=["batch_stats"])
        return layers.cross_entropy(logits, batch["label"]), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    order = layer_order(state.params)
    # Norms in float64 on the host: N(0, 1)'s gradients reach 1e20 and their squares overflow float32.
    norms = [float(np.linalg.norm(np.asarray(grads[k]["kernel"], np.float64))) for k in order]
    return {"loss": float(loss), "logit_std": float(np.std(np.asarray(logits, np.float64))), "layers": order,
            "kernel_grad_norm": norms, "grad_norm_first_over_last": norms[0] / norms[-1] if norms[-1] else None}


def train_one(model, config, tx, preprocess, train_set, val_set, seed: int):
    """One ``fit`` of ``config["epochs"]``; a non-finite loss ends the run and is recorded as a result.

    Returns: ``(row, state)``: the row holds the status ("trained": final validation error at most
      ``config["trained_val_error"]``; "did not train"; "diverged"), the step of a non-finite loss, and the
      per-epoch curves (the epochs completed before a divergence); ``state`` is the final ``TrainState``,
      None for a diverged run.
    """
    completed = []  # fit's History after each epoch, so a diverged run keeps its curve
    started = time.perf_counter()
    try:
        state, history = train.fit(model, train_set, val_data=val_set, epochs=config["epochs"],
                               batch_size=config["batch_size"], optimizer=tx, seed=seed, progress=False,
                               preprocess=preprocess, on_epoch_end=lambda epoch, h: completed.append(h))
        diverged_at = None
    except train.NonFiniteLossError as err:
        history, diverged_at, state = (completed[-1] if completed else train.History()), err.step, None
    curves = {k: list(getattr(history, k)) for k in ("train_loss", "train_error", "val_loss", "val_error")}
    if diverged_at is not None:
        status = "diverged"
    elif curves["val_error"][-1] <= config["trained_val_error"]:
        status = "trained"
    else:
        status = "did not train"
    row = {"seed": seed, "status": status, "diverged_at_step": diverged_at, "epochs_completed": len(history),
           **curves, "final_val_error": curves["val_error"][-1] if curves["val_error"] else None,
           "seconds": time.perf_counter() - started}
    return row, state


# ----------------------------------------------------------------------------------------------
# a training loop with the learning rate as a traced hyperparameter (learning_rate_schedules.py, weight_decay.py,
# resnet_without_bn.py)
# ----------------------------------------------------------------------------------------------
def with_traced_rate(unit_tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``unit_tx`` (an optimizer built with ``learning_rate=1.0``) followed by a multiplication by a
    learning rate that lives in the optimizer state, so one compiled step serves every rate
    (set it with :func:`set_rate`)."""
    return optax.chain(unit_tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))


def set_rate(state: train.TrainState, rate: float) -> train.TrainState:
    """``state`` with the learning rate of a :func:`with_traced_rate` optimizer set to ``rate``."""
    inner, scale = state.opt_state
    hyper = dict(scale.hyperparams, step_size=jnp.asarray(rate, jnp.float32))
    return state.replace(opt_state=(inner, scale._replace(hyperparams=hyper)))


# Evaluation does not use the optimizer, but the compiled evaluation step is keyed on the state's static
# `tx`: evaluating with this one placeholder compiles it once per model instead of once per optimizer.
_EVAL_TX = optax.identity()


def train_run(state: train.TrainState, train_set: dict, val_set: dict, *, epochs: int, batch_size: int,
              seed: int, step, on_epoch_end=None) -> tuple[train.TrainState, dict]:
    """``epochs`` epochs of the jitted ``step`` over ``Batches(train_set, batch_size, seed=seed)``.

    Returns the final state and a record: per-step training loss, per-epoch mean training loss and
    validation loss/error (``train.evaluate``), and ``diverged`` (a non-finite loss or parameter; the run
    stops at the end of that epoch and its curves end before the first non-finite value).
    ``on_epoch_end(epoch, state)`` (1-based epoch), if given, is called after each finite epoch.
    """
    batches = data.Batches(train_set, batch_size, seed=seed)
    rec = {"step_loss": [], "train_loss": [], "val_loss": [], "val_error": [], "diverged": False}
    for epoch in range(epochs):
        metrics = []
        with batches.epoch(epoch) as it:
            for batch in it:
                state, m = step(state, batch)
                metrics.append(m)
        metrics = jax.device_get(metrics)
        losses = [float(m["loss"]) / int(m["count"]) for m in metrics]
        finite = [math.isfinite(v) for v in losses]
        if not all(finite) or not all(np.isfinite(p).all() for p in jax.device_get(jax.tree.leaves(state.params))):
            rec["step_loss"] += losses[:finite.index(False)] if not all(finite) else losses
            rec["diverged"] = True
            break
        rec["step_loss"] += losses
        rec["train_loss"].append(float(np.mean(losses)))
        ev = train.evaluate(state.replace(opt_state=(), tx=_EVAL_TX), val_set, batch_size=500)
        rec["val_loss"].append(ev["loss"])
        rec["val_error"].append(1.0 - ev["accuracy"])
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, state)
    rec["final_val_error"] = None if rec["diverged"] else rec["val_error"][-1]
    rec["final_train_loss"] = None if rec["diverged"] else rec["train_loss"][-1]
    return state, rec


def build_model(name: str, options: dict):
    """``"convnet"``: the ``experiments._nets.ConvNet`` with ``options``; otherwise
    ``jaxnets.models.create(name, **options)`` (the tiny presets use a small MLP: it compiles fastest)."""
    return ConvNet(**options) if name == "convnet" else models.create(name, **options)
