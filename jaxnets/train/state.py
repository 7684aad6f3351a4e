"""`TrainState`: everything a training step reads and writes, as one pytree.

The state is a Flax struct: its array fields (`step`, `params`, `batch_stats`, `opt_state`, `rng`) are
pytree leaves, so it goes through `jax.jit`, `shard_map`, `pmap`, `device_put` and checkpoints whole;
`apply_fn` (the model's `apply`) and `tx` (the Optax optimizer) are static fields, part of the compiled
function's identity rather than its inputs. `loss_scale` is None except for float16 training
(`jaxnets.train.precision`), where it holds the dynamic loss scale.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.core import unfreeze
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxnets.checks import check_input_layout, check_int
from jaxnets.train.precision import DynamicLossScale, as_policy

_COLLECTIONS = ("params", "batch_stats")
_SHOWN = 12  # at most this many entries per list in an error message


def _listing(entries: list[str]) -> str:
    shown = ", ".join(entries[:_SHOWN])
    return shown + (f", ... ({len(entries) - _SHOWN} more)" if len(entries) > _SHOWN else "")


def _check_collections(fn: str, variables: Mapping) -> None:
    extra = sorted(set(variables) - set(_COLLECTIONS))
    if extra:
        raise ValueError(f"{fn}: the model creates variable collections {extra}; only 'params' and "
                         f"'batch_stats' are kept in a TrainState.")


def _init_shapes(model: nn.Module, shape: tuple[int, ...], dtype) -> dict:
    """The variable tree `model.init` would create for an input of `shape` (traced only, nothing computed)."""
    x = jax.ShapeDtypeStruct(shape, dtype)
    return unfreeze(jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x))


def _mismatches(shapes: dict, given: dict) -> list[str]:
    """How `given` ({"params": ..., maybe "batch_stats": ...}) differs from the model's tree `shapes`."""
    want = {path: leaf for path, leaf in flatten_dict(shapes).items() if path[0] in given}
    have = flatten_dict(given)
    problems = [f"missing {'/'.join(p)}" for p in want if p not in have]
    problems += [f"unexpected {'/'.join(p)}" for p in have if p not in want]
    for path in (p for p in want if p in have):
        value, leaf = have[path], want[path]
        shape, dtype = tuple(np.shape(value)), getattr(value, "dtype", None)
        if shape != tuple(leaf.shape):
            problems.append(f"{'/'.join(path)} has shape {shape}, the model needs {tuple(leaf.shape)}")
        elif dtype is None or not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
            problems.append(f"{'/'.join(path)} has dtype {dtype}, the model needs a floating dtype ({leaf.dtype})")
    return problems


def _given_variables(fn: str, model: nn.Module, x: jax.Array, variables, init_key: jax.Array) -> dict:
    """COPIES of the user's variables, checked against the model's own tree and cast to its dtypes."""
    if not isinstance(variables, Mapping):
        raise TypeError(f"{fn}: variables must be a mapping ({{'params': ..., 'batch_stats': ...}} as from_torch "
                        f"returns, or a params tree), got {type(variables).__name__}.")
    variables = unfreeze(variables)
    collections = "params" in variables and set(variables) <= set(_COLLECTIONS)
    given = dict(variables) if collections else {"params": variables}
    shapes = _init_shapes(model, x.shape, x.dtype)
    _check_collections(fn, shapes)
    problems = _mismatches(shapes, given)
    if problems:
        # The same weights with the sample's channel axis moved: a layout mistake, said as such.
        for source, target in ((1, -1), (-1, 1)):
            if x.ndim >= 3:
                moved = tuple(np.moveaxis(np.empty(x.shape, np.int8), source, target).shape)
                try:
                    fits = not _mismatches(_init_shapes(model, moved, x.dtype), given)
                except Exception:  # the model rejects the moved shape: not this layout
                    fits = False
                if fits:
                    check_input_layout(fn, "sample_input", x.shape, moved[1:])
        raise ValueError(f"{fn}: variables do not fit the model initialised on sample_input of shape "
                         f"{tuple(x.shape)} ({len(problems)} problems): {_listing(problems)}.")
    # Copies (copy=True): compiled steps donate the state's buffers, the caller's arrays must survive them.
    dtypes = {path: leaf.dtype for path, leaf in flatten_dict(shapes).items()}
    out = {c: unflatten_dict({path: jnp.array(value, dtype=dtypes[(c, *path)], copy=True)
                              for path, value in flatten_dict(given[c]).items()}) for c in given}
    if "batch_stats" in shapes and "batch_stats" not in out:  # params only: BN statistics start at init
        out["batch_stats"] = model.init({"params": init_key}, x, train=False)["batch_stats"]
    return out


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
      input_shape: static, the shape of one input without the batch axis that `create` initialised the
        model on (None for a state built by hand); `check_input` compares batches against it.

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
    input_shape: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def create(cls, model: nn.Module, optimizer: optax.GradientTransformation, sample_input,
               seed: int, *, variables=None, precision=None,
               loss_scale: DynamicLossScale | None = None) -> TrainState:
        """Initialise a run from one integer seed, or from given weights (`variables=`).

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
          seed: the run's integer seed (the state's `rng` comes from it, with or without `variables`).
          variables: None (initialise from `seed`), or the weights to start from: `{"params": ...,
            "batch_stats": ...}` as `jaxnets.models.from_torch` returns, `{"params": ...}`, or a bare params
            tree (then BatchNorm statistics start at their initial values). They are checked against the
            tree `model.init` creates for `sample_input` (structure, shapes, floating dtypes), cast to the
            model's dtypes, and COPIED: compiled steps donate the state's buffers, and the caller's arrays
            stay valid. Their kernel shapes also reveal a `sample_input` in the wrong layout (below).
          precision: None (float32), a dtype name or a `precision.Policy`, the one the steps will use:
            the parameters are initialised in float32, then stored in its `param_dtype`; a float16
            compute dtype gets a default `DynamicLossScale.create()` unless `loss_scale` is given.
          loss_scale: a `precision.DynamicLossScale` to use (any precision), or None for the default above.
        Returns: a `TrainState` with `step == 0`.
        Raises:
          TypeError: `model` is not a Flax module, `optimizer` has no `init`/`update`, `seed` is not an
            int, `precision` is not a policy, `loss_scale` is not a `DynamicLossScale`, `variables` is
            not a mapping.
          ValueError: the model creates variable collections other than "params" and "batch_stats";
            `variables` that do not fit the model (every missing, unexpected, mis-shaped or non-floating
            leaf listed); a `sample_input` that looks NCHW for a model whose `variables` are NHWC (or the
            reverse), said as such (`jaxnets.checks.check_input_layout`).
        PyTorch: `model.load_state_dict(state_dict)` before building the optimizer.
        """
        fn = "TrainState.create"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn}: model must be a flax.linen.Module, got {type(model).__name__}.")
        if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
            raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation (with init and update), "
                            f"got {type(optimizer).__name__}.")
        check_int(fn, "seed", seed)
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

        if variables is not None:
            variables = _given_variables(fn, model, x, variables, init_key)
        else:
            # Eager, not jitted: each initializer op is compiled once per shape and cached for the process,
            # which is faster than compiling a fresh `jit(model.init)` program for every state created.
            variables = dict(model.init({"params": init_key}, x, train=False))
        _check_collections(fn, variables)
        params, batch_stats = variables.get("params", {}), variables.get("batch_stats", {})
        if precision is not None:
            params = policy.cast_to_param(params)
        return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                   opt_state=optimizer.init(params),
                   rng=rng, apply_fn=model.apply, tx=optimizer, loss_scale=loss_scale,
                   input_shape=tuple(int(d) for d in x.shape[1:]))

    def check_input(self, fn: str, name: str, shape) -> None:
        """Raise a ValueError naming both layouts if a batch of `shape` looks NCHW for the NHWC input the
        model was initialised on (or the reverse); nothing when `input_shape` is None.

        Call it before tracing a step on a batch, e.g. `state.check_input("fit", "batch['image']", x.shape)`.
        See `jaxnets.checks.check_input_layout`.
        """
        if self.input_shape is not None:
            check_input_layout(fn, name, shape, self.input_shape)

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
