"""Dropout (inverted): PyTorch's `torch.nn.functional.dropout`, with an explicit PRNG key."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets.checks import at_least_float32, check_array, check_bool, check_floating, check_key, is_real

__all__ = ["dropout"]


def dropout(key: jax.Array, x: jax.Array, rate: float, *, train: bool) -> jax.Array:
    """Zero each element with probability `rate`; scale the survivors by 1 / (1 - rate).

    `y = x * m / (1 - rate)` with `m ~ Bernoulli(1 - rate)` drawn independently per element, so
    `E[y] = x` (inverted dropout: nothing to rescale at evaluation). The mask depends only on `key`
    and `x.shape`: the same key gives the same mask.

    Args:
      key: a single PRNG key (`jax.random.key` or a raw uint32 key); unused, and not checked, when
        `train=False` or `rate == 0` (None is then fine).
      x: floating array of any shape.
      rate: probability of DROPPING an element (not the keep probability, unlike Haiku/TF1), a Python
        float in [0, 1): static under `jit`.
      train: required Python bool; when False, `x` is returned unchanged.
    Returns: an array with the shape and dtype of `x` (`x` itself when `train=False` or `rate == 0`).
    Raises:
      TypeError: `rate` not a Python float (e.g. a traced array), `train` not a bool, `x` not a floating
        array; `key` not a PRNG key (an int, None, a float array) when it is used.
      ValueError: `rate` outside [0, 1); a batch of keys (split it, or `jax.vmap` over the keys).
    PyTorch: `torch.nn.functional.dropout(x, p=rate, training=train)`.
    """
    fn = "dropout"
    train = check_bool(fn, "train", train)
    if not is_real(rate):
        raise TypeError(f"{fn}: rate must be a Python float in [0, 1) (static: it sets the scale "
                        f"1 / (1 - rate) at trace time), got {type(rate).__name__} {rate!r}.")
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"{fn}: rate (the DROP probability) must be in [0, 1), got {rate}.")
    check_floating(fn, "x", check_array(fn, "x", x))
    if not train or rate == 0.0:
        return x
    key = check_key(fn, key)
    x = jnp.asarray(x)
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    # Scale in float32 or wider: in bf16, 1 - rate (e.g. 0.9 -> 0.8984) would bias E[y] by ~0.2%.
    wide = at_least_float32(x.dtype)
    scaled = (x.astype(wide) / (1.0 - rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros((), x.dtype))
