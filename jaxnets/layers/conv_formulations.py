"""How the three parts of a convolution are computed: XLA's plain convolution, and the CPU formulations.

A convolution `y = conv(x, kernel)` has three parts, each bilinear: the forward pass `F(x, kernel)`, the data
gradient `D(g, kernel)` (the cotangent of `x` for the output cotangent `g`) and the weight gradient `W(x, g)`.
`layers/population.py` makes them primitives (for their derivatives and batching rules); this module says what
each computes. `plain_forward`, `plain_data_gradient` and `plain_weight_gradient` are `lax.conv_general_dilated`
and JAX's own transposes of it: every part lowers to them on GPU and TPU. On CPU, XLA's convolution is slow on
some shapes, and `cpu_forward`, `cpu_data_gradient` and `cpu_weight_gradient` compute those another way
(measured per shape and in whole training steps in benchmarks/README.md, "Speed work", item 7):

  one input channel, forward (channels-last, groups=1): `taps_forward`, the sum over kernel taps of the shifted
      input times that tap's weights, elementwise multiply-adds XLA fuses into one loop (LeNet-5's first layer);
  at most `FEW_INPUT_CHANNELS` input channels, data gradient: `data_gradient_by_patches`, one matrix product and a
      sum of shifted copies (LeNet-5's second layer).

Everything else is the plain convolution. The numbers are the same up to float rounding (the sums run in another
order); `cpu_formulations(False)` turns the CPU formulations off for tests and benchmarks that compare.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.checks import at_least_float32
from jaxnets.layers.switch import Switch

__all__ = ["FEW_INPUT_CHANNELS", "cpu_formulations", "plain_forward", "plain_data_gradient", "plain_weight_gradient",
           "cpu_forward", "cpu_data_gradient", "cpu_weight_gradient", "taps_forward", "data_gradient_by_patches"]

# The patches data gradient wins over XLA's at every measured shape with up to 8 input channels and loses at 16
# (benchmarks/README.md, "Speed work", item 7).
FEW_INPUT_CHANNELS = 8
_CPU_FORMULATIONS = Switch("cpu_formulations")


def cpu_formulations(enabled: bool):
    """Within the block, `layers.conv` on CPU uses this module's formulations where they apply (True, the default)
    or XLA's plain convolution everywhere (False). Read at TRACE time: a function jitted inside the block keeps
    the choice. For tests and benchmarks (the same numbers up to float rounding).
    """
    return _CPU_FORMULATIONS.set(enabled)


def formulations_enabled() -> bool:
    """The switch's state, read when `layers.conv` binds its primitive (the `cpu_formulations` parameter)."""
    return _CPU_FORMULATIONS.enabled


# ----------------------------------------------------------------------------------------------
# The plain computations
# ----------------------------------------------------------------------------------------------
def plain_forward(x, kernel, *, strides, padding, dilation, dimension_numbers, groups, cpu_formulations=False):
    del cpu_formulations  # a choice of CPU lowering, not of the numbers
    return lax.conv_general_dilated(x, kernel, window_strides=strides, padding=padding, rhs_dilation=dilation,
                                    dimension_numbers=dimension_numbers, feature_group_count=groups)


def plain_data_gradient(g, kernel, *, x_shape, **params):
    """The cotangent of `x` for the output cotangent `g`: JAX's own transpose of the convolution."""
    def linear(x):
        return plain_forward(x, kernel, **params)

    return jax.linear_transpose(linear, jax.ShapeDtypeStruct(x_shape, g.dtype))(g)[0]


def plain_weight_gradient(x, g, *, kernel_shape, **params):
    """The cotangent of the kernel for the output cotangent `g`: JAX's own transpose of the convolution."""
    def linear(kernel):
        return plain_forward(x, kernel, **params)

    return jax.linear_transpose(linear, jax.ShapeDtypeStruct(kernel_shape, g.dtype))(g)[0]


# ----------------------------------------------------------------------------------------------
# Which formulation (CPU)
# ----------------------------------------------------------------------------------------------
def channels_last_ungrouped(params, kernel_shape) -> bool:
    """`[N, *S, C]` input and output, `[*K, I, O]` kernel, groups=1: the layout the taps and patches formulations
    are written for."""
    lhs, rhs, out = params["dimension_numbers"]
    n = len(params["strides"])
    channels_last = lhs[-1] == "C" and out[-1] == "C" and rhs[-2:] == "IO" and lhs[0] == out[0] == "N"
    return params["groups"] == 1 and channels_last and len(kernel_shape) == n + 2


def _few_channels(params, kernel_shape, most: int) -> bool:
    return (params.get("cpu_formulations", False) and channels_last_ungrouped(params, kernel_shape)
            and kernel_shape[-2] <= most)


def cpu_forward(x, kernel, **params):
    if _few_channels(params, kernel.shape, 1):
        return taps_forward(x, kernel, **params)
    return plain_forward(x, kernel, **params)


def cpu_data_gradient(g, kernel, *, x_shape, **params):
    if _few_channels(params, kernel.shape, FEW_INPUT_CHANNELS):
        return data_gradient_by_patches(g, kernel, x_shape=x_shape, **params)
    return plain_data_gradient(g, kernel, x_shape=x_shape, **params)


def cpu_weight_gradient(x, g, *, kernel_shape, **params):
    # XLA's weight gradient was the fastest at every measured shape
    return plain_weight_gradient(x, g, kernel_shape=kernel_shape, **params)


# ----------------------------------------------------------------------------------------------
# The formulations
# ----------------------------------------------------------------------------------------------
def taps_forward(x, kernel, *, strides, padding, dilation, **unused):
    """The forward convolution `[N, *S, C] x [*K, C, O] -> [N, *S_out, O]` (channels-last, groups=1) as the sum
    over the kernel taps t and input channels c of `x_shifted_t[..., c] * kernel[t, c, :]`: C * prod(K)
    elementwise multiply-adds that XLA fuses into one loop. Fast for one input channel; under `vmap` over input
    and kernel it is the population's "taps" formulation (layers/population.py)."""
    del unused
    n, *sizes, c = x.shape
    *k_spatial, _, o = kernel.shape
    config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in padding] + [(0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), config)
    outs = [(size + lo + hi - d * (k - 1) - 1) // s + 1
            for size, (lo, hi), d, k, s in zip(sizes, padding, dilation, k_spatial, strides)]
    y = None
    for tap in itertools.product(*(range(k) for k in k_spatial)):
        start = [0] + [t * d for t, d in zip(tap, dilation)] + [0]
        limit = [n] + [t * d + (m - 1) * s + 1 for t, d, m, s in zip(tap, dilation, outs, strides)] + [c]
        shifted = lax.slice(xp, start, limit, [1, *strides, 1])  # [N, *S_out, C]
        for ch in range(c):
            term = shifted[..., ch:ch + 1] * kernel[(*tap, ch)]  # [N, *S_out, 1] * [O]
            y = term if y is None else y + term
    return y


def data_gradient_by_patches(g, kernel, *, x_shape, strides, padding, dilation, **unused):
    """The data gradient `[N, *S_out, O] x [*K, C, O] -> [N, *S, C]` of a channels-last, groups=1 convolution
    as one matrix product and a sum of shifted copies: `patches = g @ kernel^T` (`[N, *S_out, taps, C]`, each
    output position's cotangent spread over the inputs it read), then each tap's slice added back at the input
    positions `tap * dilation + out * stride - pad_lo` (zero-padded by `lax.pad`, interior padding for the
    stride, negative padding to drop the rows of the zero padding). XLA fuses the sum into one loop."""
    del unused
    *k_spatial, c, o = kernel.shape
    taps = list(itertools.product(*(range(k) for k in k_spatial)))
    # half precision: products accumulated in float32, as XLA's convolution does, rounded once at the end
    acc = at_least_float32(g.dtype)
    patches = jnp.dot(g, kernel.reshape(len(taps) * c, o).T, preferred_element_type=acc)
    patches = patches.reshape(*g.shape[:-1], len(taps), c)
    out_sizes, sizes = g.shape[1:-1], x_shape[1:-1]
    dx = None
    for t, tap in enumerate(taps):
        starts = [k_t * d - lo for k_t, d, (lo, _) in zip(tap, dilation, padding)]  # negative: in the padding
        part = _place(patches[..., t, :], starts, strides, out_sizes, sizes)
        dx = part if dx is None else dx + part
    return dx.astype(g.dtype)


def _place(part, starts: Sequence[int], strides: Sequence[int], counts: Sequence[int], sizes: Sequence[int]):
    """`[N, *counts, C]` rows put at positions `start + i * stride` of a zero `[N, *sizes, C]` (rows outside
    `0 .. size - 1` dropped): `lax.pad` with interior padding `stride - 1` and (possibly negative) edges."""
    config = [(0, 0, 0)]
    for start, s, m, size in zip(starts, strides, counts, sizes):
        config.append((start, size - (start + (m - 1) * s + 1), s - 1))
    config.append((0, 0, 0))
    return lax.pad(part, jnp.zeros((), part.dtype), config)
