"""Mixed-precision training: a dtype `Policy` and a `DynamicLossScale` (torch.amp.GradScaler's rule).

    from jaxnets import train
    steps = train.compile_steps(precision="bfloat16")          # or train.Policy("float16")
    state = steps.put_state(train.TrainState.create(model, tx, x[:1], seed=0, precision="bfloat16"))
    state, metrics = steps.train(state, batch)                 # forward and backward in bfloat16
    state, history = train.fit(model, data, ..., precision="float16")   # all of the above, plus loss scaling

What a policy does in `make_train_step` / `make_eval_step` (`Policy.cast_*`):
- the master parameters stay in `param_dtype` (float32) in the `TrainState`, and the optimizer
  updates them there; each step casts them and the (preprocessed) inputs to `compute_dtype`, so every
  conv and matmul of the forward and backward pass runs in that dtype;
- the logits are cast to `output_dtype` (float32) before the loss, so the softmax, the loss and the
  metrics are float32; gradients flow back through the casts and reach the master parameters in float32;
- BatchNorm computes its statistics in float32 from low-precision inputs, returns its output in the
  input dtype, and keeps its running averages (`batch_stats`) in float32 (`layers.batch_norm`).

float16 has 5 exponent bits: gradients below ~6e-8 flush to zero. A float16 policy therefore needs
dynamic loss scaling, as in PyTorch AMP (Micikevicius et al. 2018, "Mixed Precision Training"): the
loss is multiplied by `scale` before the backward pass and the gradients divided by it after; when any
gradient is inf or nan the update is skipped and the scale halved, and after `growth_interval`
consecutive finite steps it is doubled. The `DynamicLossScale` lives in `TrainState.loss_scale`, so it
is placed, donated, checkpointed and restored with the rest of the state. bfloat16 has float32's
exponent range and needs no loss scale (jmp, Flax and PyTorch alike use none for it).

The default (`precision=None`, or `Policy("float32")`) casts nothing: the step is the float32 one, bit
for bit. PyTorch: `torch.autocast(device_type, dtype)` + `torch.amp.GradScaler(device)`; JAX: `jmp.Policy`
+ `jmp.DynamicLossScale`, Flax's `DynamicScale`. Unlike autocast, which picks a dtype per op, a policy
casts the parameters and inputs and lets every layer run in their dtype; only BatchNorm's statistics and
the loss are computed in float32.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import check_positive_int, is_real
from flax import struct

__all__ = ["Policy", "DynamicLossScale", "as_policy", "all_finite", "DTYPES"]

# The floating dtypes a policy may name, by their numpy names (aliases in _ALIASES).
DTYPES = ("float32", "bfloat16", "float16")
_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16", "fp16": "float16",
            "half": "float16"}
_KEYS = {"compute": "compute_dtype", "params": "param_dtype", "output": "output_dtype"}


def _dtype(fn: str, name: str, value) -> jnp.dtype:
    """`value` (a dtype or a dtype name) as one of `DTYPES`, else ValueError/TypeError naming `name`."""
    if isinstance(value, str):
        value = _ALIASES.get(value.lower(), value.lower())
        if value not in DTYPES:
            raise ValueError(f"{fn}: {name} must be one of {DTYPES}, got {value!r}.")
        return jnp.dtype(value)
    try:
        dtype = jnp.dtype(value)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be a dtype or one of the names {DTYPES}, got "
                        f"{type(value).__name__} {value!r}.") from None
    if dtype.name not in DTYPES:
        raise ValueError(f"{fn}: {name} must be one of {DTYPES}, got {dtype.name}.")
    return dtype


def _cast_floating(tree, dtype):
    """Every floating-point leaf of `tree` cast to `dtype`; other leaves and leaves already in `dtype` as they are."""
    def cast(x):
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype else x
    return jax.tree.map(cast, tree)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The dtypes of a training step: master parameters, computation, and the model's output.

    Attributes (each a dtype or its name: "float32", "bfloat16", "float16"; aliases "f32", "bf16", "fp16"):
      compute_dtype: what the parameters and inputs are cast to inside the step; every conv, matmul
        and activation of the model runs in it (BatchNorm statistics excepted: float32).
      param_dtype: the master parameters' dtype in the `TrainState` (`TrainState.create` casts the
        initialised parameters to it); the optimizer updates them in it. Default float32.
      output_dtype: the logits are cast to it before the loss. Default float32.

    A frozen dataclass, hashable: it is part of the compiled step's identity (`compile_steps`, `fit`).
    `str(policy)` is the string `Policy.from_string` reads back.
    Raises: ValueError for a dtype name outside `DTYPES`; TypeError for something that is not a dtype.
    PyTorch: `torch.autocast(device_type, dtype=compute_dtype)` around the forward (parameters stay float32).
    """

    compute_dtype: jnp.dtype
    param_dtype: jnp.dtype = jnp.dtype("float32")
    output_dtype: jnp.dtype = jnp.dtype("float32")

    def __post_init__(self):
        for field in ("compute_dtype", "param_dtype", "output_dtype"):
            object.__setattr__(self, field, _dtype("Policy", field, getattr(self, field)))

    @classmethod
    def from_string(cls, text: str) -> Policy:
        """A policy from a dtype name (`"bfloat16"`: compute in bfloat16, float32 parameters and output) or
        from `"compute=float16,params=float32,output=float32"` (any of the three keys, the rest default).

        Raises: ValueError for an unknown key or dtype name; TypeError if `text` is not a string.
        """
        fn = "Policy.from_string"
        if not isinstance(text, str):
            raise TypeError(f"{fn}: text must be a string such as 'bfloat16' or 'compute=float16,params=float32', "
                            f"got {type(text).__name__} {text!r}.")
        if "=" not in text:
            return cls(_dtype(fn, "text", text.strip()))
        fields = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            if key.strip() not in _KEYS:
                raise ValueError(f"{fn}: expected 'key=dtype' entries with the keys {tuple(_KEYS)}, got "
                                 f"{part.strip()!r} in {text!r}.")
            fields[_KEYS[key.strip()]] = _dtype(fn, key.strip(), value.strip())
        if "compute_dtype" not in fields:
            fields["compute_dtype"] = jnp.dtype("float32")
        return cls(**fields)

    def __str__(self) -> str:
        if self.param_dtype == self.output_dtype == jnp.float32:
            return self.compute_dtype.name
        return f"compute={self.compute_dtype.name},params={self.param_dtype.name},output={self.output_dtype.name}"

    @property
    def is_float32(self) -> bool:
        """True when the policy changes nothing: all three dtypes float32."""
        return self.compute_dtype == self.param_dtype == self.output_dtype == jnp.float32

    @property
    def needs_loss_scale(self) -> bool:
        """True for float16 compute: its gradients underflow without loss scaling."""
        return self.compute_dtype == jnp.float16

    def cast_to_compute(self, tree):
        """Floating-point leaves of `tree` (parameters, inputs) in `compute_dtype`; others unchanged."""
        return _cast_floating(tree, self.compute_dtype)

    def cast_to_param(self, tree):
        """Floating-point leaves of `tree` in `param_dtype` (what `TrainState.create` stores)."""
        return _cast_floating(tree, self.param_dtype)

    def cast_to_output(self, tree):
        """Floating-point leaves of `tree` (the logits) in `output_dtype`."""
        return _cast_floating(tree, self.output_dtype)


def as_policy(fn: str, precision) -> Policy:
    """`precision` as a `Policy`: None -> float32 (no casts), a string -> `Policy.from_string`, a Policy as is.

    Raises: TypeError naming `fn` for anything else; ValueError for a bad string.
    """
    if precision is None:
        return Policy("float32")
    if isinstance(precision, Policy):
        return precision
    if isinstance(precision, str):
        return Policy.from_string(precision)
    raise TypeError(f"{fn}: precision must be None, a dtype name such as 'bfloat16' or a jaxnets.train.Policy, "
                    f"got {type(precision).__name__} {precision!r}.")


def all_finite(tree) -> jax.Array:
    """A scalar bool: every element of every inexact leaf of `tree` is finite (True for a tree without any)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


class DynamicLossScale(struct.PyTreeNode):
    """Dynamic loss scaling with the rule of `torch.amp.GradScaler` (its `_amp_update_scale_`).

    Per step: the loss is multiplied by `scale`, the gradients divided by it; then `adjust(finite)`:

        non-finite gradients:  scale <- scale * backoff_factor,  growth_tracker <- 0      (update skipped)
        finite gradients:      growth_tracker <- growth_tracker + 1, and if it reaches growth_interval:
                               scale <- scale * growth_factor (kept only if finite), growth_tracker <- 0

    Fields:
      scale: float32 scalar, the current loss scale.
      growth_tracker: int32 scalar, consecutive finite steps since the last change (torch's name).
      growth_factor, backoff_factor, growth_interval: static hyperparameters (not leaves).
    Create with `DynamicLossScale.create(...)`; it is a pytree, kept in `TrainState.loss_scale`.
    PyTorch: `torch.amp.GradScaler(device, init_scale, growth_factor, backoff_factor, growth_interval)`.
    """

    scale: jax.Array
    growth_tracker: jax.Array
    growth_factor: float = struct.field(pytree_node=False, default=2.0)
    backoff_factor: float = struct.field(pytree_node=False, default=0.5)
    growth_interval: int = struct.field(pytree_node=False, default=2000)

    @classmethod
    def create(cls, init_scale: float = 2.0 ** 16, *, growth_factor: float = 2.0, backoff_factor: float = 0.5,
               growth_interval: int = 2000) -> DynamicLossScale:
        """A fresh loss scale; the defaults are torch.amp.GradScaler's.

        Args:
          init_scale: the first step's scale, a finite float > 0 (powers of two keep the scaling exact).
          growth_factor: multiplies the scale after `growth_interval` finite steps, > 1.
          backoff_factor: multiplies the scale after a non-finite step, in (0, 1).
          growth_interval: number of consecutive finite steps before the scale grows, an int >= 1.
        Raises: ValueError for a value out of range; TypeError for a non-number or a non-int interval.
        """
        fn = "DynamicLossScale.create"
        checks = (("init_scale", init_scale, lambda v: 0 < v < np.inf, "a finite float > 0"),
                  ("growth_factor", growth_factor, lambda v: 1 < v < np.inf, "a finite float > 1"),
                  ("backoff_factor", backoff_factor, lambda v: 0 < v < 1, "a float in (0, 1)"))
        for name, value, ok, expected in checks:
            if not is_real(value):
                raise TypeError(f"{fn}: {name} must be {expected}, got {type(value).__name__} {value!r}.")
            if not ok(float(value)):
                raise ValueError(f"{fn}: {name} must be {expected}, got {value!r}.")
        check_positive_int(fn, "growth_interval", growth_interval)
        return cls(scale=jnp.asarray(init_scale, jnp.float32), growth_tracker=jnp.zeros((), jnp.int32),
                   growth_factor=float(growth_factor), backoff_factor=float(backoff_factor),
                   growth_interval=int(growth_interval))

    def scale_loss(self, loss: jax.Array) -> jax.Array:
        """`loss * scale` (float32), the quantity to differentiate."""
        return loss * self.scale.astype(loss.dtype)

    def unscale(self, grads):
        """Gradients of the scaled loss divided by `scale` (multiplied by `1 / scale`, as torch does)."""
        inverse = 1.0 / self.scale
        return jax.tree.map(lambda g: g * inverse.astype(g.dtype), grads)

    def adjust(self, finite: jax.Array) -> DynamicLossScale:
        """The next step's loss scale after a step whose gradients were all `finite` (a scalar bool)."""
        grown = self.scale * self.growth_factor
        tracker = self.growth_tracker + 1
        grow = tracker >= self.growth_interval
        finite_scale = jnp.where(grow & jnp.isfinite(grown), grown, self.scale)
        scale = jnp.where(finite, finite_scale, self.scale * self.backoff_factor)
        tracker = jnp.where(finite & ~grow, tracker, 0)
        return self.replace(scale=scale.astype(jnp.float32), growth_tracker=tracker.astype(jnp.int32))
