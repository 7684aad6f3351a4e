"""Elementwise activations, maxout, and `get_activation(name)` for modules configured by name.

Gradients at the kinks follow PyTorch: relu'(0) = 0, leaky_relu'(0) = negative_slope, elu'(0) = alpha.
Every function raises TypeError, naming itself, for an `x` that is not an array.
"""
from __future__ import annotations

from collections.abc import Callable

import warnings

import jax
import jax.numpy as jnp

from jaxnets.checks import at_least_float32, check_array, check_int, check_real, is_channels_last

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
    "log_softmax",
    "get_activation",
]


def _array(fn: str, x) -> jax.Array:
    return jnp.asarray(check_array(fn, "x", x))


def _positional_option(fn: str, name: str, args: tuple, value: float, default: float) -> float:
    """The option `name` passed positionally (deprecated: a DeprecationWarning) or by keyword."""
    if not args:
        return value
    if len(args) > 1 or value != default:
        raise TypeError(f"{fn}: takes x and the keyword-only option {name}=, got {len(args)} extra positional "
                        f"argument(s) {args!r}{' and ' + name + '=' if value != default else ''}.")
    warnings.warn(f"{fn}: passing {name} positionally is deprecated and will be removed in the next release; "
                  f"call {fn}(x, {name}={args[0]!r}).", DeprecationWarning, stacklevel=3)
    return args[0]


def relu(x: jax.Array) -> jax.Array:
    """`max(x, 0)`; gradient 0 at x = 0. PyTorch: `torch.relu`."""
    return jax.nn.relu(_array("relu", x))


def leaky_relu(x: jax.Array, *args, negative_slope: float = 0.01) -> jax.Array:
    """`x if x > 0 else negative_slope * x`; gradient `negative_slope` at 0.

    Args:
      x: array of any shape.
      negative_slope: keyword-only real number (default 0.01, as in PyTorch/Flax/JAX); passing it
        positionally, `leaky_relu(x, 0.2)`, still works for one release with a DeprecationWarning.
    Raises: TypeError for a non-array `x` or a `negative_slope` that is not a real number; ValueError for
      a non-finite one.
    PyTorch: `torch.nn.functional.leaky_relu(x, negative_slope)`.
    """
    fn = "leaky_relu"
    x = _array(fn, x)
    negative_slope = check_real(fn, "negative_slope", _positional_option(fn, "negative_slope", args,
                                                                          negative_slope, 0.01))
    return jnp.where(x > 0, x, negative_slope * x)


def elu(x: jax.Array, *args, alpha: float = 1.0) -> jax.Array:
    """`x if x > 0 else alpha * (exp(x) - 1)` (Clevert et al., 2015); gradient `alpha` at 0.

    Args:
      x: array of any shape.
      alpha: keyword-only real number (default 1.0); positional use, `elu(x, 0.5)`, still works for one
        release with a DeprecationWarning.
    Raises: TypeError for a non-array `x` or an `alpha` that is not a real number; ValueError for a
      non-finite one.
    PyTorch: `torch.nn.functional.elu(x, alpha)`.
    """
    fn = "elu"
    x = _array(fn, x)
    alpha = check_real(fn, "alpha", _positional_option(fn, "alpha", args, alpha, 1.0))
    # expm1 for accuracy near 0; its argument is zeroed where x > 0 so the unused branch cannot overflow
    # to inf and turn the gradient of large x into 0 * inf = NaN. (Not jnp.minimum(x, 0): its gradient
    # at the tie x = 0 is 1/2, which would halve elu'(0).)
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.where(x > 0, 0, x)))


def sigmoid(x: jax.Array) -> jax.Array:
    """`1 / (1 + exp(-x))`, finite for any x. PyTorch: `torch.sigmoid`."""
    return jax.nn.sigmoid(_array("sigmoid", x))


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent. PyTorch: `torch.tanh`."""
    return jnp.tanh(_array("tanh", x))


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, `x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))` (Hendrycks & Gimpel, 2016).

    PyTorch: `torch.nn.functional.gelu(x)` (approximate="none"). Note `jax.nn.gelu` defaults to the
    tanh approximation; this is the erf form.
    """
    return jax.nn.gelu(_array("gelu", x), approximate=False)


def softplus(x: jax.Array) -> jax.Array:
    """`log(1 + exp(x))`, computed as `logaddexp(x, 0)`: finite for any x.

    PyTorch: `torch.nn.functional.softplus(x)` (beta=1), which returns x itself above its threshold 20;
    there the two differ by log1p(exp(-x)) < 2.1e-9, below float32 resolution of x.
    """
    return jax.nn.softplus(_array("softplus", x))


def silu(x: jax.Array) -> jax.Array:
    """`x * sigmoid(x)` (a.k.a. swish). PyTorch: `torch.nn.functional.silu`."""
    return jax.nn.silu(_array("silu", x))


def identity(x: jax.Array) -> jax.Array:
    """Returns `x` unchanged ("identity"/"linear" in `get_activation`). PyTorch: `torch.nn.Identity`."""
    return check_array("identity", "x", x)


def log_softmax(x: jax.Array, *, axis: int = -1) -> jax.Array:
    """`x - logsumexp(x, axis)`: log-probabilities along `axis` (the class axis, last by default).

    Computed with the max subtracted (finite for any finite `x`) in float32 or wider
    (`checks.at_least_float32`), then cast back to the dtype of `x`, as PyTorch does for half precision.

    Args:
      x: floating array of rank >= 1.
      axis: keyword-only int in `[-x.ndim, x.ndim)`.
    Returns: an array with the shape and dtype of `x`.
    Raises: TypeError for a non-array or non-floating `x` or a non-int `axis` (a bool included); ValueError
      for an `axis` out of range or a 0-d `x`.
    PyTorch: `torch.nn.functional.log_softmax(x, dim=axis)`.
    """
    fn = "log_softmax"
    x = _array(fn, x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: x must be a floating-point array, got dtype {x.dtype}.")
    if x.ndim == 0:
        raise ValueError(f"{fn}: x must have rank >= 1 (a class axis), got a 0-d array.")
    axis = check_int(fn, "axis", axis, minimum=-x.ndim, maximum=x.ndim - 1)
    return jax.nn.log_softmax(x.astype(at_least_float32(x.dtype)), axis=axis).astype(x.dtype)


def maxout(x: jax.Array, pieces: int, *, layout: str = "NHWC", axis: int | None = None) -> jax.Array:
    """Maxout (Goodfellow et al., 2013): the max over groups of `pieces` CONSECUTIVE channels.

    With `C` channels, output channel `j` is `max(x[..., j * pieces : (j + 1) * pieces])` along the channel
    axis, so the output has `C / pieces` channels there. (Equivalently: reshape the channel axis to
    `[C / pieces, pieces]` and take the max over the second.) At ties, the gradient is shared equally.

    Args:
      x: array of rank >= 1 with `C` channels: on the last axis for a channels-last `layout` (the default,
        also `[N, C]` dense inputs), on axis 1 for a channels-first one (`"NCHW"` etc.).
      pieces: number of linear pieces per output unit, a positive int dividing `C` (it defines the
        operation, so it stays positional).
      layout: where the channels are, as everywhere in `layers`.
      axis: deprecated (a DeprecationWarning; removed in the next release): the channel axis, overriding
        `layout`. Use `layout="NCHW"` for axis 1.
    Returns: `x` with its channel axis of size `C` replaced by `C // pieces`.
    Raises: TypeError if `x` is not an array, `pieces` not an int (a bool included) or `layout` not a
      string; ValueError if `pieces` is not positive or does not divide C, for an unknown layout, or a
      deprecated `axis` out of range.
    PyTorch: no built-in; `x.unflatten(axis, (C // pieces, pieces)).amax(axis + 1)`.
    """
    fn = "maxout"
    x = _array(fn, x)
    pieces = check_int(fn, "pieces", pieces, minimum=1)
    channels_last = is_channels_last(fn, layout)
    if axis is None:
        if x.ndim < (1 if channels_last else 2):
            raise ValueError(f"{fn}: x of shape {tuple(x.shape)} has no channel axis for layout {layout!r}.")
        axis = x.ndim - 1 if channels_last else 1
    else:
        warnings.warn(f"{fn}: axis= is deprecated and will be removed in the next release; pass layout= "
                      f"(layout='NHWC' for the last axis, layout='NCHW' for axis 1).", DeprecationWarning, stacklevel=2)
        axis = check_int(fn, "axis", axis, minimum=-x.ndim, maximum=x.ndim - 1) % x.ndim
    c = x.shape[axis]
    if c % pieces:
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
