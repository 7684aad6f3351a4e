"""Variance-scaling initializers: every named scheme is `variance_scaling` with a particular scale and mode.

A factory returns `init(key, shape, dtype=jnp.float32) -> array`, the signature of Flax's
`kernel_init`. The fans come from `compute_fans(shape, kernel_layout=kernel_layout)`: pass
`kernel_layout="OIHW"` (any name of that family) for PyTorch-shaped kernels; the default `"HWIO"` family
covers dense `[in, out]` and channels-last conv kernels. The old keyword `layout=` still works for one
release, with a DeprecationWarning. `key` must be a single PRNG key (`jax.random.key(seed)`).

Distributions, all with mean 0 and exactly the variance `scale / fan`:
- `"normal"`: an exact Gaussian (NOT Flax's default for `variance_scaling`, which truncates);
- `"uniform"`: `U(-b, b)` with `b = sqrt(3 * variance)`;
- `"truncated_normal"`: a normal cut at two of its standard deviations and rescaled so the variance is exact.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxnets.checks import (check_choice, check_int, check_key, check_real, check_shape, kernel_is_channels_last,
                            renamed_keyword)
from jaxnets.init.fans import calculate_gain, fans

Initializer = Callable[..., jax.Array]

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")

# Std of a standard normal truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))). Dividing by it
# makes the truncated samples' variance exactly the requested one (the same constant as Flax/TF).
TRUNCATED_NORMAL_STD = .87962566103423978

# torch.nn.Linear/ConvNd weights: kaiming_uniform_(a=sqrt(5)), i.e. variance gain^2 / fan_in with
# gain = calculate_gain("leaky_relu", sqrt(5)), i.e. scale 1/3, bound sqrt(3 * scale / fan_in) = 1/sqrt(fan_in).
_PYTORCH_SCALE = calculate_gain("leaky_relu", math.sqrt(5)) ** 2


def _check_dtype(fn: str, dtype) -> None:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: dtype must be a floating dtype, got {jnp.dtype(dtype)}.")


def _sample(key: jax.Array, shape: tuple[int, ...], dtype, variance: float, distribution: str) -> jax.Array:
    """Mean-0 samples with exactly `variance` from `distribution`; the one place samples are drawn."""
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


def _variance_scaling(fn: str, scale: float, mode: str, distribution: str, kernel_layout: str,
                      layout: str | None) -> Initializer:
    """`variance_scaling` with `fn` (the public factory's name) in its error messages."""
    check_real(fn, "scale", scale, minimum=0.0, min_inclusive=False)
    check_choice(fn, "mode", mode, MODES)
    check_choice(fn, "distribution", distribution, DISTRIBUTIONS)
    kernel_layout = renamed_keyword(fn, "layout", layout, "kernel_layout", kernel_layout)
    kernel_is_channels_last(fn, kernel_layout)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        check_key(fn, key)
        _check_dtype(fn, dtype)
        shape = check_shape(fn, shape)
        fan_in, fan_out = fans(fn, shape, kernel_layout)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        if fan == 0:  # a zero fan means a zero-size kernel: nothing to draw
            return jnp.zeros(shape, dtype)
        return _sample(key, shape, dtype, scale / fan, distribution)

    return init


def variance_scaling(scale: float, *, mode: str = "fan_in", distribution: str = "normal",
                     kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """Mean-0 initializer with variance `scale / fan`: the one formula behind every initializer here.

    `fan` is `fan_in`, `fan_out` or `fan_avg = (fan_in + fan_out) / 2` from `compute_fans`.
    `"normal"` is an exact Gaussian; `"uniform"` is `U(-b, b)`, `b = sqrt(3 scale / fan)`;
    `"truncated_normal"` draws a normal of std `s = sqrt(scale / fan) / .87962566103423978` cut at
    `+-2 s`, whose variance is exactly `scale / fan` (.8796... is the std of a unit normal cut at +-2).

    Args:
      scale: > 0, the variance times the fan (for all zeros use `zeros`).
      mode: `"fan_in"`, `"fan_out"` or `"fan_avg"`.
      distribution: `"normal"`, `"truncated_normal"` or `"uniform"`.
      kernel_layout: kernel layout family for the fans: `"HWIO"` (default: `IO`/`WIO`/`HWIO`/`DHWIO`) or
        `"OIHW"` (PyTorch's `OI`/`OIW`/`OIHW`/`OIDHW`); the rank of the shape picks the member.
      layout: deprecated name of `kernel_layout` (DeprecationWarning).
    Returns: `init(key, shape, dtype=jnp.float32)`; it raises ValueError for a shape of rank < 2 or a batch
      of keys, TypeError for a non-floating dtype or a `key` that is not a PRNG key.
    Raises: ValueError for a scale <= 0, an unknown mode, distribution or kernel layout; TypeError for a
      scale that is not a real number or a mode/distribution/kernel layout that is not a string.
    Flax: `flax.linen.initializers.variance_scaling` (whose `"normal"` is a truncated normal).
    """
    return _variance_scaling("variance_scaling", scale, mode, distribution, kernel_layout, layout)


def lecun_normal(*, kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """Exact Gaussian with variance `1 / fan_in` (LeCun et al. 1998). Flax's `lecun_normal` truncates."""
    return _variance_scaling("lecun_normal", 1.0, "fan_in", "normal", kernel_layout, layout)


def lecun_uniform(*, kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """`U(-b, b)` with variance `1 / fan_in`, `b = sqrt(3 / fan_in)`."""
    return _variance_scaling("lecun_uniform", 1.0, "fan_in", "uniform", kernel_layout, layout)


def _xavier(fn: str, gain, distribution: str, kernel_layout: str, layout: str | None) -> Initializer:
    # gain > 0: PyTorch accepts 0 (all zeros: use `zeros`) and fails only when sampling with a negative one.
    gain = check_real(fn, "gain", gain, minimum=0.0, min_inclusive=False)
    return _variance_scaling(fn, gain ** 2, "fan_avg", distribution, kernel_layout, layout)


def xavier_normal(gain: float = 1.0, *, kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """Gaussian with variance `gain^2 * 2 / (fan_in + fan_out)` (Glorot & Bengio 2010); `gain > 0`.

    Raises: TypeError for a gain that is not a real number; ValueError for `gain <= 0`.
    PyTorch: `torch.nn.init.xavier_normal_(w, gain)` (for `kernel_layout="OIHW"`).
    """
    return _xavier("xavier_normal", gain, "normal", kernel_layout, layout)


def xavier_uniform(gain: float = 1.0, *, kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """`U(-b, b)`, `b = gain * sqrt(6 / (fan_in + fan_out))`: variance `gain^2 * 2 / (fan_in + fan_out)`.

    Raises: TypeError for a gain that is not a real number; ValueError for `gain <= 0`.
    PyTorch: `torch.nn.init.xavier_uniform_(w, gain)`.
    """
    return _xavier("xavier_uniform", gain, "uniform", kernel_layout, layout)


def _he(fn: str, mode: str, nonlinearity: str, negative_slope: float, distribution: str, kernel_layout: str,
        layout: str | None) -> Initializer:
    check_choice(fn, "mode", mode, ("fan_in", "fan_out"))  # PyTorch's kaiming modes (no fan_avg)
    negative_slope = check_real(fn, "negative_slope", negative_slope)
    gain = calculate_gain(nonlinearity, negative_slope)
    return _variance_scaling(fn, gain ** 2, mode, distribution, kernel_layout, layout)


def he_normal(*, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
              kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """Gaussian with variance `gain^2 / fan` (He et al. 2015), `gain = calculate_gain(nonlinearity,
    negative_slope)`: `2 / fan_in` for the defaults.

    Args: `mode` `"fan_in"` (preserves forward variance) or `"fan_out"` (backward);
      `nonlinearity` a `calculate_gain` name; `negative_slope` the leaky_relu slope; `kernel_layout`
      (`layout` is its deprecated name).
    Raises: ValueError for an unknown mode, nonlinearity or kernel layout; TypeError for arguments of the
      wrong type.
    PyTorch: `torch.nn.init.kaiming_normal_(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity)`.
    """
    return _he("he_normal", mode, nonlinearity, negative_slope, "normal", kernel_layout, layout)


def he_uniform(*, mode: str = "fan_in", nonlinearity: str = "relu", negative_slope: float = 0.0,
               kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """`U(-b, b)` with variance `gain^2 / fan`, `b = gain * sqrt(3 / fan)`; arguments as `he_normal`.

    PyTorch: `torch.nn.init.kaiming_uniform_(w, a=negative_slope, mode=mode, nonlinearity=nonlinearity)`.
    """
    return _he("he_uniform", mode, nonlinearity, negative_slope, "uniform", kernel_layout, layout)


def pytorch_default(*, kernel_layout: str = "HWIO", layout: str | None = None) -> Initializer:
    """The weight init of `torch.nn.Linear` and `torch.nn.ConvNd`: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

    PyTorch calls `kaiming_uniform_(w, a=sqrt(5))`: gain `sqrt(2 / (1 + 5))`, so the variance is
    `1 / (3 fan_in)` and the bound `1 / sqrt(fan_in)`; `fan_in` is per group for grouped convs.
    Pass `kernel_layout="OIHW"` for PyTorch-shaped kernels (`layout` is its deprecated name).
    """
    return _variance_scaling("pytorch_default", _PYTORCH_SCALE, "fan_in", "uniform", kernel_layout, layout)


def _elementwise(fn: str, draw) -> Initializer:
    """An initializer for any shape (no fans): `draw(key, shape, dtype)` after the common checks."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        check_key(fn, key)
        _check_dtype(fn, dtype)
        return draw(key, check_shape(fn, shape), dtype)

    return init


def pytorch_default_bias(fan_in: int) -> Initializer:
    """The bias init of `torch.nn.Linear`/`ConvNd`: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, 0 if `fan_in == 0`.

    Args:
      fan_in: the fan-in of the layer's weight, `compute_fans(kernel_shape, kernel_layout=...)[0]`.
    Returns: `init(key, shape, dtype=jnp.float32)` for a bias of any shape.
    Raises: ValueError for a negative fan_in; TypeError for a non-int one.
    """
    fn = "pytorch_default_bias"
    fan_in = check_int(fn, "fan_in", fan_in, minimum=0)
    # Same variance as pytorch_default's weights: 1 / (3 fan_in), i.e. bound 1 / sqrt(fan_in).
    variance = _PYTORCH_SCALE / fan_in if fan_in > 0 else 0.0
    return _elementwise(fn, lambda key, shape, dtype: _sample(key, shape, dtype, variance, "uniform"))


def normal(std: float = 1.0, mean: float = 0.0) -> Initializer:
    """Gaussian `N(mean, std^2)` for any shape (no fans).

    Args:
      std: standard deviation, > 0 (for a constant use `zeros`/`ones`).
      mean: the mean.
    Returns: `init(key, shape, dtype=jnp.float32)`.
    Raises: TypeError for a std or mean that is not a real number; ValueError for `std <= 0` or a
      non-finite value.
    PyTorch: `torch.nn.init.normal_(w, mean=mean, std=std)`; JAX: `jax.nn.initializers.normal(stddev=std)`
      (mean 0).
    """
    fn = "normal"
    std = check_real(fn, "std", std, minimum=0.0, min_inclusive=False)
    mean = check_real(fn, "mean", mean)
    return _elementwise(fn, lambda key, shape, dtype: (_sample(key, shape, dtype, std ** 2, "normal")
                                                      + jnp.asarray(mean, dtype)))


def uniform(a: float = 0.0, b: float = 1.0) -> Initializer:
    """Uniform `U(a, b)` for any shape (no fans).

    Args:
      a: lower bound.
      b: upper bound, `> a`.
    Returns: `init(key, shape, dtype=jnp.float32)`.
    Raises: TypeError for bounds that are not real numbers; ValueError for `b <= a` or a non-finite bound.
    PyTorch: `torch.nn.init.uniform_(w, a, b)` (defaults 0 and 1, like here).
    """
    fn = "uniform"
    a = check_real(fn, "a", a)
    b = check_real(fn, "b", b)
    if not b > a:
        raise ValueError(f"{fn}: the bounds must satisfy a < b, got a={a}, b={b}.")
    return _elementwise(fn, lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, a, b))


def zeros(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """All zeros; `key` is unused but checked like every initializer's. PyTorch: `torch.nn.init.zeros_`."""
    check_key("zeros", key)
    return jnp.zeros(check_shape("zeros", shape), dtype)


def ones(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """All ones; `key` is unused but checked like every initializer's. PyTorch: `torch.nn.init.ones_`."""
    check_key("ones", key)
    return jnp.ones(check_shape("ones", shape), dtype)
