"""Dropout (inverted): PyTorch's `torch.nn.functional.dropout`, with an explicit PRNG key."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import at_least_float32, check_array, check_bool, check_floating, check_key, concrete_or_none, is_real

__all__ = ["dropout"]


def _check_rate(fn: str, rate) -> tuple:
    """`(rate, traced)`: a Python float in [0, 1), or a traced scalar array (whose value cannot be checked).
    A concrete array is checked and returned as a float, so it takes the float path (the same numbers)."""
    if not is_real(rate):
        dtype = getattr(rate, "dtype", None)
        if not isinstance(rate, (jax.Array, np.ndarray)) or not (
                jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            raise TypeError(f"{fn}: rate must be a real number in [0, 1) or a real scalar array (which may be "
                            f"traced), got {type(rate).__name__} {rate!r}.")
        if np.shape(rate):
            raise ValueError(f"{fn}: rate must be a scalar, got an array of shape {np.shape(rate)}.")
        concrete = concrete_or_none(rate)
        if concrete is None:
            return rate, True
        rate = concrete.item()
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{fn}: rate (the DROP probability) must be in [0, 1), got {rate}.")
    return rate, False


def dropout(key: jax.Array, x: jax.Array, rate: float, *, train: bool) -> jax.Array:
    """Zero each element with probability `rate`; scale the survivors by 1 / (1 - rate).

    `y = x * m / (1 - rate)` with `m ~ Bernoulli(1 - rate)` drawn independently per element, so
    `E[y] = x` (inverted dropout: nothing to rescale at evaluation). The mask depends only on `key`
    and `x.shape`: the same key gives the same mask.

    Args:
      key: a single PRNG key (`jax.random.key` or a raw uint32 key); unused, and not checked, when
        `train=False` or `rate == 0` (None is then fine).
      x: floating array of any shape.
      rate: probability of DROPPING an element (not the keep probability, unlike Haiku/TF1), in [0, 1):
        a Python float (static under `jit`), or a scalar array that may be traced (e.g. one rate per
        member of a `jax.vmap`-ped population): the mask and the scale are then computed from its value,
        the range is checked only when it is concrete, and the mask is drawn even at rate 0 (where it
        keeps every element).
      train: required Python bool; when False, `x` is returned unchanged.
    Returns: an array with the shape and dtype of `x` (`x` itself when `train=False` or a float `rate == 0`).
    Raises:
      TypeError: `rate` neither a real number nor a real scalar array, `train` not a bool, `x` not a
        floating array; `key` not a PRNG key (an int, None, a float array) when it is used.
      ValueError: a concrete `rate` outside [0, 1) or not a scalar; a batch of keys (split it, or
        `jax.vmap` over the keys).
    PyTorch: `torch.nn.functional.dropout(x, p=rate, training=train)`.
    """
    fn = "dropout"
    train = check_bool(fn, "train", train)
    rate, traced = _check_rate(fn, rate)
    check_floating(fn, "x", check_array(fn, "x", x))
    if not train or (not traced and rate == 0.0):
        return x
    key = check_key(fn, key)
    x = jnp.asarray(x)
    wide = at_least_float32(x.dtype)
    # Scale in float32 or wider: in bf16, 1 - rate (e.g. 0.9 -> 0.8984) would bias E[y] by ~0.2%.
    keep_prob = 1.0 - rate if not traced else 1.0 - jnp.asarray(rate, wide)
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    scaled = (x.astype(wide) / keep_prob).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros((), x.dtype))
