"""`TrainState`: everything a training step reads and writes, as one pytree.

The state is a Flax struct: its array fields (`step`, `params`, `batch_stats`, `opt_state`, `rng`) are
pytree leaves, so it goes through `jax.jit`, `shard_map`, `pmap`, `device_put` and checkpoints whole;
`apply_fn` (the model's `apply`) and `tx` (the Optax optimizer) are static fields, part of the compiled
function's identity rather than its inputs. `loss_scale` is None except for float16 training
(`jaxnets.train.precision`), where it holds the dynamic loss scale.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxnets.train.precision import DynamicLossScale, as_policy

_COLLECTIONS = ("params", "batch_stats")


class TrainState(struct.PyTreeNode):
    """Parameters, BatchNorm statistics, optimizer state, step counter and PRNG key of a run.

    Fields:
      step: int32 scalar, the number of training steps run so far: optimizer updates applied, plus
        the updates skipped by dynamic loss scaling (non-finite float16 gradients; see `loss_scale`).
      params: the model's "params" collection (a nested dict of arrays).
      batch_stats: the model's "batch_stats" collection (running BN statistics), `{}` for a model
        without BatchNorm.
      opt_state: `tx.init(params)`, updated by every step.
      rng: a typed PRNG key (`jax.random.key`). It never changes during training: the step `s` draws
        its keys from `jax.random.fold_in(rng, s)`, so a run is reproducible from its seed and a
        resumed run draws the same keys as an uninterrupted one.
      apply_fn: static, the model's `apply` (`model.apply`).
      tx: static, the `optax.GradientTransformation` that updates `params`.
      loss_scale: a `precision.DynamicLossScale` (its scale and growth tracker are leaves), or None (no
        loss scaling: float32 and bfloat16 training). With one, `make_train_step` scales the loss by it,
        skips updates whose gradients are not finite and adjusts it every step.

    PyTorch: the model's parameters and buffers, the optimizer's `state_dict()`, and the global RNG.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    loss_scale: DynamicLossScale | None = None

    @classmethod
    def create(cls, model: nn.Module, optimizer: optax.GradientTransformation, sample_input,
               seed: int, *, precision=None, loss_scale: DynamicLossScale | None = None) -> TrainState:
        """Initialise a run from one integer seed.

        Keys: `init_key, rng = jax.random.split(jax.random.key(seed))`. `init_key` initialises the
        parameters (`model.init({"params": init_key}, x, train=False)`), `rng` becomes the state's
        key, from which every training step folds its own (see `make_train_step`). Initialisation runs
        with `train=False`, so it draws no dropout key and needs no mapped axis (a model created with
        `axis_name="batch"` initialises outside `shard_map`/`pmap`); BatchNorm statistics start at
        their initial values (mean 0, variance 1).

        Args:
          model: a Flax module called as `model(x, *, train)`.
          optimizer: an `optax.GradientTransformation` (e.g. from `jaxnets.train.optimizer`).
          sample_input: an array shaped like one batch of model inputs, e.g. `batch["image"][:1]`
            (`[N, H, W, C]`). Only its shape matters: an integer array (uint8 images) is cast to
            float32, the dtype the models take.
          seed: the run's integer seed.
          precision: None (float32), a dtype name or a `precision.Policy`, the one the steps will use:
            the parameters are initialised in float32, then stored in its `param_dtype`; a float16
            compute dtype gets a default `DynamicLossScale.create()` unless `loss_scale` is given.
          loss_scale: a `precision.DynamicLossScale` to use (any precision), or None for the default above.
        Returns: a `TrainState` with `step == 0`.
        Raises:
          TypeError: `model` is not a Flax module, `optimizer` has no `init`/`update`, `seed` is not an
            int, `precision` is not a policy, `loss_scale` is not a `DynamicLossScale`.
          ValueError: the model creates variable collections other than "params" and "batch_stats".
        """
        fn = "TrainState.create"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn}: model must be a flax.linen.Module, got {type(model).__name__}.")
        if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
            raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation (with init and update), "
                            f"got {type(optimizer).__name__}.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"{fn}: seed must be an int, got {seed!r}.")
        policy = as_policy(fn, precision)
        if loss_scale is not None and not isinstance(loss_scale, DynamicLossScale):
            raise TypeError(f"{fn}: loss_scale must be a jaxnets.train.DynamicLossScale or None, got "
                            f"{type(loss_scale).__name__}.")
        if loss_scale is None and policy.needs_loss_scale:
            loss_scale = DynamicLossScale.create()
        x = jnp.asarray(sample_input)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)  # uint8 images: the model sees float32 after preprocessing
        init_key, rng = jax.random.split(jax.random.key(int(seed)))

        # Eager, not jitted: each initializer op is compiled once per shape and cached for the process,
        # which is faster than compiling a fresh `jit(model.init)` program for every state created.
        variables = dict(model.init({"params": init_key}, x, train=False))
        extra = sorted(set(variables) - set(_COLLECTIONS))
        if extra:
            raise ValueError(f"{fn}: the model creates variable collections {extra}; only 'params' and "
                             f"'batch_stats' are kept in a TrainState.")
        params, batch_stats = variables.get("params", {}), variables.get("batch_stats", {})
        if precision is not None:
            params = policy.cast_to_param(params)
        return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                   opt_state=optimizer.init(params),
                   rng=rng, apply_fn=model.apply, tx=optimizer, loss_scale=loss_scale)

    @property
    def variables(self) -> dict:
        """`{"params": ..., "batch_stats": ...}` (no "batch_stats" key when empty), for `apply_fn`."""
        return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}

    def apply_gradients(self, grads, *, batch_stats=None) -> TrainState:
        """One optimizer update: `params <- optax.apply_updates(params, tx.update(grads, opt_state, params))`.

        Args:
          grads: gradients, a pytree shaped like `params`.
          batch_stats: new BatchNorm statistics to store with the update (None keeps the current ones).
        Returns: the state with `step + 1`, the new params, opt_state and batch_stats; `rng` unchanged.
        """
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                            opt_state=opt_state,
                            batch_stats=self.batch_stats if batch_stats is None else batch_stats)
