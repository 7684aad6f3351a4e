"""Elementwise activations, maxout, and `get_activation(name)` for modules configured by name.

Gradients at the kinks follow PyTorch: relu'(0) = 0, leaky_relu'(0) = negative_slope, elu'(0) = alpha.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = [
    "relu",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "gelu",
    "softplus",
    "silu",
    "identity",
    "maxout",
    "get_activation",
]


def relu(x: jax.Array) -> jax.Array:
    """`max(x, 0)`; gradient 0 at x = 0. PyTorch: `torch.relu`."""
    return jax.nn.relu(x)


def leaky_relu(x: jax.Array, negative_slope: float = 0.01) -> jax.Array:
    """`x if x > 0 else negative_slope * x`; gradient `negative_slope` at 0.

    PyTorch: `torch.nn.functional.leaky_relu(x, negative_slope)` (default 0.01; Flax/JAX use the same).
    """
    return jnp.where(x > 0, x, negative_slope * x)


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """`x if x > 0 else alpha * (exp(x) - 1)` (Clevert et al., 2015); gradient `alpha` at 0.

    PyTorch: `torch.nn.functional.elu(x, alpha)`.
    """
    # expm1 for accuracy near 0; its argument is zeroed where x > 0 so the unused branch cannot overflow
    # to inf and turn the gradient of large x into 0 * inf = NaN. (Not jnp.minimum(x, 0): its gradient
    # at the tie x = 0 is 1/2, which would halve elu'(0).)
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0, x)))


def sigmoid(x: jax.Array) -> jax.Array:
    """`1 / (1 + exp(-x))`, finite for any x. PyTorch: `torch.sigmoid`."""
    return jax.nn.sigmoid(x)


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent. PyTorch: `torch.tanh`."""
    return jnp.tanh(x)


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, `x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))` (Hendrycks & Gimpel, 2016).

    PyTorch: `torch.nn.functional.gelu(x)` (approximate="none"). Note `jax.nn.gelu` defaults to the
    tanh approximation; this is the erf form.
    """
    return jax.nn.gelu(x, approximate=False)


def softplus(x: jax.Array) -> jax.Array:
    """`log(1 + exp(x))`, computed as `logaddexp(x, 0)`: finite for any x.

    PyTorch: `torch.nn.functional.softplus(x)` (beta=1), which returns x itself above its threshold 20;
    there the two differ by log1p(exp(-x)) < 2.1e-9, below float32 resolution of x.
    """
    return jax.nn.softplus(x)


def silu(x: jax.Array) -> jax.Array:
    """`x * sigmoid(x)` (a.k.a. swish). PyTorch: `torch.nn.functional.silu`."""
    return jax.nn.silu(x)


def identity(x: jax.Array) -> jax.Array:
    """Returns `x` unchanged ("identity"/"linear" in `get_activation`). PyTorch: `torch.nn.Identity`."""
    return x


def maxout(x: jax.Array, pieces: int, *, axis: int = -1) -> jax.Array:
    """Maxout (Goodfellow et al., 2013): the max over groups of `pieces` CONSECUTIVE channels.

    With `C = x.shape[axis]`, output channel `j` is `max(x[..., j * pieces : (j + 1) * pieces])`
    along `axis`, so the output has `C / pieces` channels there. (Equivalently: reshape `axis` to
    `[C / pieces, pieces]` and take the max over the second.) At ties, the gradient is shared equally.

    Args:
      x: array with `C` entries along `axis`.
      pieces: number of linear pieces per output unit, a positive int dividing `C`.
      axis: the channel axis (default last; pass `axis=1` for NCHW arrays).
    Returns: `x` with `x.shape[axis]` replaced by `C // pieces`.
    Raises: TypeError if `pieces` is not an int; ValueError if it is not positive or does not divide C,
      or `axis` is out of range.
    PyTorch: no built-in; `x.unflatten(axis, (C // pieces, pieces)).amax(axis + 1)`.
    """
    fn = "maxout"
    x = jnp.asarray(x)
    if isinstance(pieces, bool) or not isinstance(pieces, int):
        raise TypeError(f"{fn}: pieces must be a Python int, got {type(pieces).__name__} {pieces!r}.")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis must be an int in [{-x.ndim}, {x.ndim}) for x of shape "
                         f"{tuple(x.shape)}, got {axis!r}.")
    axis %= x.ndim
    c = x.shape[axis]
    if pieces < 1 or c % pieces:
        raise ValueError(f"{fn}: pieces={pieces} must be a positive divisor of the {c} channels on axis "
                         f"{axis} of x with shape {tuple(x.shape)}.")
    grouped = x.reshape(x.shape[:axis] + (c // pieces, pieces) + x.shape[axis + 1:])
    return jnp.max(grouped, axis=axis + 1)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "elu": elu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "gelu": gelu,
    "softplus": softplus,
    "silu": silu,
    "identity": identity,
    "linear": identity,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called `name`, with its default parameters.

    Names: "relu", "leaky_relu" (slope 0.01), "elu" (alpha 1), "sigmoid", "tanh", "gelu" (exact erf form),
    "softplus", "silu", "identity" / "linear".
    Raises: TypeError if `name` is not a string; ValueError naming the unknown nonlinearity and the
      valid ones.
    """
    if not isinstance(name, str):
        raise TypeError(f"get_activation: nonlinearity name must be a string, got {type(name).__name__} "
                        f"{name!r}.")
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"get_activation: unknown nonlinearity {name!r}; expected one of "
                         f"{sorted(_ACTIVATIONS)}.") from None
