"""torch's `ReduceLROnPlateau`: a host-side rule on the validation metric, applied without recompiling.

The decision needs the metric of each epoch, so it runs in Python on the host; the learning rate it sets
lives in the optimizer STATE, so the compiled train step never changes:

    plateau = train.ReduceLROnPlateau(0.1, mode="min", factor=0.5, patience=3)
    tx = optax.chain(train.sgd(0.1, momentum=0.9), plateau.transform())   # the same 0.1
    ...
    for epoch in range(epochs):
        state = ...train one epoch...
        plateau.step(validation_loss)                                    # once per epoch
        state = state.replace(opt_state=plateau.apply(state.opt_state))   # writes the new scale

`transform()` is `scale_by_plateau()`: it multiplies the final update by `scale` (a float32 scalar
in its state, `ScaleByPlateauState`), so `p -= scale * lr * u`: torch's `p -= new_lr * u` with
`new_lr = scale * lr`. It must come LAST in the chain (after the multiplication by `-lr`; every
optimizer of `jaxnets.train` multiplies by the rate last, as torch, so momentum buffers hold unscaled
gradients and the reduction acts from the next step on, as in torch). For checkpoint/resume, save
`plateau.state_dict()` with the checkpoint's metadata and call `plateau.load_state_dict(d)` on
resume; the scale itself is in the optimizer state and is restored with it.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxnets.checks import check_choice, check_int, check_real

__all__ = ["ReduceLROnPlateau", "scale_by_plateau", "ScaleByPlateauState"]


class ScaleByPlateauState(NamedTuple):
    """State of `scale_by_plateau`: `scale` float32 `[]`, the current `lr / base lr` (1 at first)."""

    scale: jax.Array


def scale_by_plateau() -> optax.GradientTransformation:
    """Multiply the updates by the `scale` kept in the state; `ReduceLROnPlateau.apply` sets it.

    Returns: an `optax.GradientTransformation` with state `ScaleByPlateauState` (scale 1.0 at `init`).
    """

    def init_fn(params):
        del params
        return ScaleByPlateauState(scale=jnp.ones([], jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: (u * state.scale).astype(u.dtype), updates), state

    return optax.GradientTransformation(init_fn, update_fn)


class ReduceLROnPlateau:
    """torch.optim.lr_scheduler.ReduceLROnPlateau's rule, on the host; the rate goes into the optimizer state.

    Each `step(metric)` (once per epoch): the metric is better than the best so far when
    `metric < best * (1 - threshold)` (mode `"min"`, threshold_mode `"rel"`), `metric < best - threshold`
    (`"min"`, `"abs"`), `metric > best * (1 + threshold)` (`"max"`, `"rel"`) or
    `metric > best + threshold` (`"max"`, `"abs"`); a better metric becomes the best and resets the
    count of bad epochs, otherwise the count grows; during a cooldown the count is held at 0; when the count
    exceeds `patience`: `new = max(lr * factor, min_lr)`, applied only if `lr - new > eps`, then the
    cooldown starts and the count resets.

    Args:
      learning_rate: the base learning rate the optimizer was built with (torch's `lr`), `> 0`.
      mode: `"min"` (a loss) or `"max"` (an accuracy).
      factor: in `[0, 1)`. patience: bad epochs tolerated, an int `>= 0`.
      threshold: `>= 0`. threshold_mode: `"rel"` or `"abs"`. cooldown: an int `>= 0`.
      min_lr: lower bound on the rate, `>= 0`. eps: minimal change applied, `>= 0`.
    Raises: TypeError for a wrong type, ValueError for a value out of range (at construction); `step`
      raises TypeError for a metric that is not a real number (a jax scalar is converted).

    PyTorch: `ReduceLROnPlateau(opt, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr,
    eps)` (torch's defaults), `scheduler.step(val_loss)` once per epoch.
    """

    def __init__(self, learning_rate: float, *, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8):
        fn = "ReduceLROnPlateau"
        self.base_lr = check_real(fn, "learning_rate", learning_rate, minimum=0.0, min_inclusive=False)
        self.mode = check_choice(fn, "mode", mode, ("min", "max"))
        self.factor = check_real(fn, "factor", factor, minimum=0.0, maximum=1.0, max_inclusive=False)
        self.patience = check_int(fn, "patience", patience, minimum=0)
        self.threshold = check_real(fn, "threshold", threshold, minimum=0.0)
        self.threshold_mode = check_choice(fn, "threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int(fn, "cooldown", cooldown, minimum=0)
        self.min_lr = check_real(fn, "min_lr", min_lr, minimum=0.0)
        self.eps = check_real(fn, "eps", eps, minimum=0.0)
        self.learning_rate = self.base_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    @property
    def scale(self) -> float:
        """The current learning rate over the base one: what `apply` writes into the optimizer state."""
        return self.learning_rate / self.base_lr

    def transform(self) -> optax.GradientTransformation:
        """`scale_by_plateau()`: put it LAST in `optax.chain(optimizer, plateau.transform())`."""
        return scale_by_plateau()

    def _is_better(self, metric: float) -> bool:
        if self.mode == "min":
            bar = self.best * (1 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return metric < bar
        bar = self.best * (1 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return metric > bar

    def step(self, metric) -> bool:
        """Record one epoch's metric; returns True when the learning rate was reduced by this call."""
        try:
            value = float(metric)
        except (TypeError, ValueError):
            raise TypeError(f"ReduceLROnPlateau.step: metric must be a real number (the validation metric of "
                            f"the epoch), got {type(metric).__name__} {metric!r}.") from None
        self.last_epoch += 1
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        reduced = False
        if self.num_bad_epochs > self.patience:
            new = max(self.learning_rate * self.factor, self.min_lr)
            if self.learning_rate - new > self.eps:
                self.learning_rate = new
                reduced = True
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return reduced

    def apply(self, opt_state):
        """`opt_state` with the scale of every `ScaleByPlateauState` in it set to `self.scale`.

        The new scale has the shape, dtype and sharding of the old one, so a replicated or sharded state
        (`jaxnets.train.parallel`) keeps its placement and the compiled step is reused.

        Raises: ValueError if `opt_state` has no `ScaleByPlateauState` (the optimizer was built without
          `plateau.transform()`).
        """
        found = []

        def set_scale(node):
            if isinstance(node, ScaleByPlateauState):
                found.append(True)
                old = node.scale
                new = jnp.full(jnp.shape(old), self.scale, old.dtype)  # a replicated copy keeps its shape
                if getattr(old, "committed", False):  # placed by the caller (data parallel): same placement;
                    new = jax.device_put(new, old.sharding)  # an uncommitted one stays uncommitted (same program)
                return ScaleByPlateauState(scale=new)
            return node

        new = jax.tree.map(set_scale, opt_state, is_leaf=lambda node: isinstance(node, ScaleByPlateauState))
        if not found:
            raise ValueError("ReduceLROnPlateau.apply: the optimizer state has no ScaleByPlateauState; build the "
                             "optimizer as optax.chain(optimizer, plateau.transform()).")
        return new

    def state_dict(self) -> dict:
        """Everything `step` depends on, as plain Python numbers (for a checkpoint's metadata)."""
        # A non-finite best (no epoch seen yet: +-inf) is stored as None, so the dict is strict JSON.
        best = self.best if math.isfinite(self.best) else None
        return {"learning_rate": self.learning_rate, "best": best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s values (the options come from the constructor, as in torch)."""
        missing = sorted({"learning_rate", "best", "num_bad_epochs", "cooldown_counter", "last_epoch"} - set(state))
        if missing:
            raise ValueError(f"ReduceLROnPlateau.load_state_dict: missing keys {missing}, got {sorted(state)}.")
        self.learning_rate = float(state["learning_rate"])
        self.best = (math.inf if self.mode == "min" else -math.inf) if state["best"] is None else float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])
