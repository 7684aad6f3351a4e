"""Variance-scaling initializers: every named scheme is ``variance_scaling`` with a particular scale and mode.

A factory returns ``init(key, shape, dtype=jnp.float32) -> array``, the signature of Flax's
``kernel_init``. The fans come from ``compute_fans(shape, layout=layout)``: pass ``layout="OIHW"`` (any
name of that family) for PyTorch-shaped kernels; the default ``"HWIO"`` family covers dense ``[in, out]``
and channels-last conv kernels.

Distributions, all with mean 0 and exactly the variance ``scale / fan``:
- ``"normal"``: an exact Gaussian (NOT Flax's default for ``variance_scaling``, which truncates);
- ``"uniform"``: ``U(-b, b)`` with ``b = sqrt(3 * variance)``;
- ``"truncated_normal"``: a normal cut at two of its standard deviations and rescaled so the variance is exact.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxnets.init.fans import calculate_gain, check_shape, fans, kernel_is_channels_last

Initializer = Callable[..., jax.Array]

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Std of a standard normal truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))). Dividing by it
# makes the truncated samples' variance exactly the requested one (the same constant as Flax/TF).
TRUNCATED_NORMAL_STD = .87962566103423978

# torch.nn.Linear/ConvNd weights: kaiming_uniform_(a=sqrt(5)), i.e. variance gain^2 / fan_in with
# gain = calculate_gain("leaky_relu", sqrt(5)), i.e. scale 1/3, bound sqrt(3 * scale / fan_in) = 1/sqrt(fan_in).
_PYTORCH_SCALE = calculate_gain("leaky_relu", math.sqrt(5)) ** 2


def _check_number(fn: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a number, got {value!r}.")


def _check_dtype(fn: str, dtype) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {jnp.dtype(dtype)}.")


def _sample(key: jax.Array, shape: tuple[int, ...], dtype, variance: float, distribution: str) -> jax.Array:
    """Mean-0 samples with exactly ``variance`` from ``distribution``; the one place samples are drawn."""
    # Draw flat, then reshape: the same values as drawing with `shape` (the bits fill it in row-major order),
    # but one compiled sampler per size instead of one per shape.
    flat = (math.prod(shape),)
    if distribution == "normal":
        x = jax.random.normal(key, flat, dtype) * math.sqrt(variance)
    elif distribution == "uniform":
        bound = math.sqrt(3.0 * variance)  # Var U(-b, b) = b^2 / 3
        x = jax.random.uniform(key, flat, dtype, -bound, bound)
    else:
        # truncated_normal: a unit normal cut at +-2 has std TRUNCATED_NORMAL_STD; rescale to the target std.
        x = jax.random.truncated_normal(key, -2.0, 2.0, flat, dtype) * (math.sqrt(variance) / TRUNCATED_NORMAL_STD)
    return x.reshape(shape)


def _variance_scaling(fn: str, scale: float, mode: str, distribution: str, layout: str) -> Initializer:
    """``variance_scaling`` with ``fn`` (the public factory's name) in its error messages."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0.0 <= scale < math.inf:
        raise ValueError(f"{fn}: scale must be a finite number >= 0, got {scale!r}.")
    if mode not in MODES:
        raise ValueError(f"{fn}: mode must be one of {MODES}, got {mode!r}.")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"{fn}: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}.")
    kernel_is_channels_last(fn, layout)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        _check_dtype(fn, dtype)
        shape = check_shape(fn, shape)
        fan_in, fan_out = fans(fn, shape, layout)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        if fan == 0:  # a zero fan means a zero-size kernel: nothing to draw
            return jnp.zeros(shape, dtype)
        return _sample(key, shape, dtype, scale / fan, distribution)

    return init


def variance_scaling(scale: float, *, mode: str = "fan_in", distribution: str = "normal",
                     layout: str = "HWIO") -> Initializer:
    """Mean-0 initializer with variance ``scale / fan``: the one formula behind every initializer here.

    ``fan`` is ``fan_in``, ``fan_out`` or ``fan_avg = (fan_in + fan_out) / 2`` from ``compute_fans``.
    ``"normal"`` is an exact Gaussian; ``"uniform"`` is ``U(-b, b)``, ``b = sqrt(3 scale / fan)``;
    ``"truncated_normal"`` draws a normal of std ``s = sqrt(scale / fan) / .87962566103423978`` cut at
    ``+-2 s``, whose variance is exactly ``scale / fan`` (.8796... is the std of a unit normal cut at +-2).

    Args:
      scale: >= 0, the variance times the fan.
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"normal"``, ``"truncated_normal"`` or ``"uniform"``.
      layout: kernel layout family for the fans: ``"HWIO"`` (default: ``IO``/``WIO``/``HWIO``/``DHWIO``) or
        ``"OIHW"`` (PyTorch's ``OI``/``OIW``/``OIHW``/``OIDHW``); the rank of the shape picks the member.
    Returns: ``init(key, shape, dtype=jnp.float32)``; it raises ValueError for a shape of rank < 2 and
      TypeError for a non-floating dtype.
    Raises: ValueError for a negative scale, an unknown mode, distribution or layout.
    Flax: ``flax.linen.initializers.variance_scaling`` (whose ``"normal"`` is a truncated normal).
    """
    return _variance_scaling("variance_scaling", scale, mode, distribution, layout)


def lecun_normal(*, layout: str = "HWIO") -> Initializer:
    """Exact Gaussian with variance ``1 / fan_in`` (LeCun et al. 1998). Flax's ``lecun_normal`` truncates."""
    return _variance_scaling("lecun_normal", 1.0, "fan_in", "normal", layout)


def lecun_uniform(*, layout: str = "HWIO") -> Initializer:
    """``U(-b, b)`` with variance ``1 / fan_in``, ``b = sqrt(3 / fan_in)``."""
    return _variance_scaling("lecun_uniform", 1.0, "fan_in", "uniform", layout)


def xavier_normal(gain: float = 1.0, *, layout: str = "HWIO") -> Initializer:
    """Gaussian with variance ``gain^2 * 2 / (fan_in + fan_out)`` (Glorot & Bengio 2010).

    PyTorch: ``torch.nn.init.xavier_normal_(w, gain)`` (for ``layout="OIHW"``).
    """
    _check_number("xavier_normal", "gain", gain)
    return _variance_scaling("xavier_normal", gain ** 2, "fan_avg", "normal", layout)


def xavier_uniform(gain: float = 1.0, *, layout: str = "HWIO") -> Initializer:
    """``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``: variance ``gain^2 * 2 / (fan_in + fan_out)``.

    PyTorch: ``torch.nn.init.xavier_uniform_(w, gain)``.
    """
    _check_number("xavier_uniform", "gain", gain)
    return _variance_scaling("xavier_uniform", gain ** 2, "fan_avg", "uniform", layout)


def _he(fn: str, mode: str, nonlinearity: str, negative_slope: float, distribution: str,
        layout: str) -> Initializer:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"{fn}: mode must be 'fan_in' or 'fan_out' (PyTorch's kaiming modes), got {mode!r}.")
    gain = calculate_gain(nonlinearity, negative_slope)
    return _variance_scaling(fn, gain ** 2, mode, distribution, layout)


def he_normal(*, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
              layout: str = "HWIO") -> Initializer:
    """Gaussian with variance ``gain^2 / fan`` (He et al. 2015), ``gain = calculate_gain(nonlinearity,
    negative_slope)``: ``2 / fan_in`` for the defaults.

    Args: ``mode`` ``"fan_in"`` (preserves forward variance) or ``"fan_out"`` (backward);
      ``nonlinearity`` a ``calculate_gain`` name; ``negative_slope`` the leaky_relu slope; ``layout``.
    Raises: ValueError for an unknown mode, nonlinearity or layout.
    PyTorch: ``torch.nn.init.kaiming_normal_(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity)``.
    """
    return _he("he_normal", mode, nonlinearity, negative_slope, "normal", layout)


def he_uniform(*, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
               layout: str = "HWIO") -> Initializer:
    """``U(-b, b)`` with variance ``gain^2 / fan``, ``b = gain * sqrt(3 / fan)``; arguments as ``he_normal``.

    PyTorch: ``torch.nn.init.kaiming_uniform_(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity)``.
    """
    return _he("he_uniform", mode, nonlinearity, negative_slope, "uniform", layout)


def pytorch_default(*, layout: str = "HWIO") -> Initializer:
    """The weight init of ``torch.nn.Linear`` and ``torch.nn.ConvNd``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    PyTorch calls ``kaiming_uniform_(w, a=sqrt(5))``: gain ``sqrt(2 / (1 + 5))``, so the variance is
    ``1 / (3 fan_in)`` and the bound ``1 / sqrt(fan_in)``; ``fan_in`` is per group for grouped convs.
    Pass ``layout="OIHW"`` for PyTorch-shaped kernels.
    """
    return _variance_scaling("pytorch_default", _PYTORCH_SCALE, "fan_in", "uniform", layout)


def pytorch_default_bias(fan_in: int) -> Initializer:
    """The bias init of ``torch.nn.Linear``/``ConvNd``: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, 0 if ``fan_in == 0``.

    Args:
      fan_in: the fan-in of the layer's weight, ``compute_fans(kernel_shape, layout=...)[0]``.
    Returns: ``init(key, shape, dtype=jnp.float32)`` for a bias of any shape.
    Raises: ValueError for a negative fan_in; TypeError for a non-int one.
    """
    fn = "pytorch_default_bias"
    if isinstance(fan_in, bool) or not isinstance(fan_in, numbers.Integral):
        raise TypeError(f"{fn}: fan_in must be an int, got {fan_in!r}.")
    if fan_in < 0:
        raise ValueError(f"{fn}: fan_in must be >= 0, got {fan_in}.")
    # Same variance as pytorch_default's weights: 1 / (3 fan_in), i.e. bound 1 / sqrt(fan_in).
    variance = _PYTORCH_SCALE / fan_in if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        _check_dtype(fn, dtype)
        return _sample(key, check_shape(fn, shape), dtype, variance, "uniform")

    return init


def zeros(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """All zeros (``key`` unused). PyTorch: ``torch.nn.init.zeros_``."""
    return jnp.zeros(check_shape("zeros", shape), dtype)


def ones(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """All ones (``key`` unused). PyTorch: ``torch.nn.init.ones_``."""
    return jnp.ones(check_shape("ones", shape), dtype)
