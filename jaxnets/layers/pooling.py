"""Max, average, global-average and adaptive-average pooling with PyTorch's semantics.

Output sizes come from `conv.conv_output_size` (called, not copied), including PyTorch's ceil-mode rule
that the last window must start inside the input or the left padding. Averages are accumulated in
`checks.at_least_float32` of the input dtype (float32 for bfloat16/float16), then cast back.
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxnets.checks import Layout, as_tuple, at_least_float32, check_array, check_bool, spatial_layout
from jaxnets.layers.conv import conv_output_size
from jaxnets.layers.switch import Switch


class _Windows(NamedTuple):
    lay: Layout
    window: tuple[int, ...]  # per spatial dim
    stride: tuple[int, ...]
    padding: tuple[int, ...]  # explicit padding, both sides
    sizes: tuple[int, ...]  # input spatial sizes
    outs: tuple[int, ...]  # output spatial sizes
    extra: tuple[int, ...]  # high padding added so that ceil mode yields `outs` windows

    def full(self, per_spatial, fill):
        """Expand a per-spatial-dim tuple to all axes of x, with `fill` on batch and channel axes."""
        out = [fill] * (self.lay.spatial + 2)
        for a, v in zip(self.lay.spatial_axes, per_spatial):
            out[a] = v
        return tuple(out)

    def reduce(self, x, init, op):
        pads = self.full(tuple((p, p + e) for p, e in zip(self.padding, self.extra)), (0, 0))
        return lax.reduce_window(x, init, op, self.full(self.window, 1), self.full(self.stride, 1), pads)


def _windows(fn: str, x, window, stride, padding, ceil_mode, layout) -> _Windows:
    lay = spatial_layout(fn, x, layout)
    n = lay.spatial
    window = as_tuple(fn, "window", window, n)
    stride = window if stride is None else as_tuple(fn, "stride", stride, n)
    padding = as_tuple(fn, "padding", padding, n, minimum=0)
    ceil_mode = check_bool(fn, "ceil_mode", ceil_mode)
    if any(p > w // 2 for p, w in zip(padding, window)):
        raise ValueError(f"{fn}: padding must be at most half the window (PyTorch's rule: padding <= window // 2), "
                         f"got padding={padding} for window={window}.")
    sizes = tuple(x.shape[a] for a in lay.spatial_axes)
    for i, (sz, w, p) in enumerate(zip(sizes, window, padding)):
        if w > sz + 2 * p:
            raise ValueError(f"{fn}: the window size {w} is larger than the padded input along spatial dim {i}: "
                             f"{sz} + {p} + {p} = {sz + 2 * p}. Use a smaller window, more padding or a larger input.")
    outs = conv_output_size(sizes, window, stride=stride, padding=padding, ceil_mode=ceil_mode)
    # Ceil mode: pad the high side just enough for `out` full windows; those pixels never count as input.
    extra = tuple(max(0, (o - 1) * s + w - (sz + 2 * p))
                  for o, s, w, sz, p in zip(outs, stride, window, sizes, padding))
    return _Windows(lay, window, stride, padding, sizes, outs, extra)


def _accumulation_dtype(fn: str, dtype):
    # Sums of half-precision floats are accumulated in float32 (as PyTorch does), then cast back.
    if jnp.issubdtype(dtype, jnp.floating):
        return at_least_float32(dtype)
    raise TypeError(f"{fn}: x must have a floating-point dtype for averaging, got {dtype}.")


def max_pool(x: jax.Array, window, *, stride=None, padding=0, ceil_mode: bool = False,
             layout: str = "NHWC") -> jax.Array:
    """Max over sliding windows of each channel; 1D/2D/3D from `x.ndim`.

    `y[n, c, o] = max_{k < window} x_padded[n, c, o * stride + k]`, padding with `-inf` (never selected).
    Output size per spatial dim: `conv_output_size(size, window, stride=, padding=, ceil_mode=)`.

    Args:
      x: `[N, *spatial, C]` (default) or `[N, C, *spatial]` with `layout="NCHW"` etc.
      window: int >= 1 or one per spatial dim.
      stride: int >= 1 or one per spatial dim; None (default) means `window`.
      padding: int >= 0 or one per spatial dim, on both sides, at most `window // 2` (PyTorch's rule).
      ceil_mode: round the output size up, PyTorch's rule: the last window must start inside the input or
        the left padding (e.g. 32 with window 3, stride 2 gives 16 instead of 15).
      layout: `"NWC"/"NHWC"/"NDHWC"` or `"NCW"/"NCHW"/"NCDHW"`.
    Returns: `[N, *out, C]` or `[N, C, *out]`, dtype of `x`; NaN where a window holds a NaN. The gradient of
      each window goes to the element PyTorch picks: its first maximum, or its last NaN.
    Raises: ValueError for a wrong rank, unknown layout, window larger than the padded input, padding larger
      than half the window, non-positive window/stride; TypeError for a non-array `x`, non-int window/stride/padding (a bool
      included), a non-bool ceil_mode or a non-string layout.

    PyTorch: `torch.nn.functional.max_pool1d/2d/3d` (`dilation=1`).
    """
    x = jnp.asarray(check_array("max_pool", "x", x))
    w = _windows("max_pool", x, window, stride, padding, ceil_mode, layout)
    if jnp.issubdtype(x.dtype, jnp.floating):
        init = -jnp.inf
    elif jnp.issubdtype(x.dtype, jnp.integer):
        init = int(jnp.iinfo(x.dtype).min)
    else:
        raise TypeError(f"max_pool: x must have a numeric dtype, got {x.dtype}.")
    if _TILED.enabled and w.stride == w.window and not any(w.padding) and not any(w.extra):
        return _max_pool_tiled(x, w)
    return w.reduce(x, init, lax.max)


# ----------------------------------------------------------------------------------------------
# Non-overlapping windows (stride = window, no padding): max over a reshape
# ----------------------------------------------------------------------------------------------
# XLA differentiates `reduce_window` max through `select_and_scatter`, which its CPU backend runs slowly
# (benchmarks/README.md, "Speed work", item 8). Where the windows tile the input (the common `max_pool(x, 2)`),
# each window's elements are slices of a reshape: the maximum is a chain of `lax.max` over them; differentiated,
# one reduction gives the maximum and PyTorch's index, and the derivative is a one-hot selection.
# Switched only through `tiled_max_pool` (tests and benchmarks compare against `reduce_window`).
_TILED = Switch("tiled_max_pool")


def tiled_max_pool(enabled: bool):
    """Within the block, `max_pool` with stride = window and no padding reshapes the input into its windows
    (True, the default) or runs `lax.reduce_window` (False). Read at TRACE time: a function jitted inside the
    block keeps the choice. For tests and benchmarks (bitwise the same outputs and gradients).
    """
    return _TILED.set(enabled)


def _window_view(x: jax.Array, w: _Windows) -> tuple[jax.Array, tuple[int, ...]]:
    """`x` without the trailing rows no window reads (floor mode), reshaped so that each spatial axis becomes
    the two axes `(out, window)`; returns it and the positions of the window axes."""
    limits, shape, window_axes = list(x.shape), [], []
    for a, size in enumerate(x.shape):
        if a in w.lay.spatial_axes:
            i = w.lay.spatial_axes.index(a)
            limits[a] = w.outs[i] * w.window[i]
            shape += [w.outs[i], w.window[i]]
            window_axes.append(len(shape) - 1)
        else:
            shape.append(size)
    return lax.slice(x, (0,) * x.ndim, limits).reshape(shape), tuple(window_axes)


def _first_max(xr: jax.Array, window_axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """The maximum of each window and the row-major index of its element, PyTorch's choice: scanning the window
    in row-major order, an element is taken when it is greater than the maximum so far or NaN (so ties go to the
    first, and a window with a NaN gives NaN at its last NaN). One variadic reduction (a total order, so
    associative): XLA materialises its result rather than recomputing the window in each consumer."""
    sizes = [xr.shape[a] for a in window_axes]
    positions = np.arange(int(np.prod(sizes)), dtype=np.int32).reshape(sizes)
    positions = np.expand_dims(positions, [a for a in range(xr.ndim) if a not in window_axes])
    index = jnp.broadcast_to(jnp.asarray(positions), xr.shape)
    floating = jnp.issubdtype(xr.dtype, jnp.floating)

    def better(a, b):  # (value, index) pairs: is a chosen over b?
        (va, ia), (vb, ib) = a, b
        if not floating:
            return (va > vb) | ((va == vb) & (ia < ib))
        nan_a, nan_b = jnp.isnan(va), jnp.isnan(vb)
        return jnp.where(nan_a | nan_b, nan_a & (~nan_b | (ia > ib)), (va > vb) | ((va == vb) & (ia < ib)))

    def choose(a, b):
        take_a = better(a, b)
        return tuple(jnp.where(take_a, u, v) for u, v in zip(a, b))

    lowest = -jnp.inf if floating else jnp.iinfo(xr.dtype).min
    init = (jnp.array(lowest, xr.dtype), jnp.array(np.iinfo(np.int32).max, jnp.int32))
    best, idx = lax.reduce((xr, index), init, choose, window_axes)
    return best, idx


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool_windows(xr: jax.Array, window_axes: tuple[int, ...]) -> jax.Array:
    # Without a derivative only the maximum is needed: `lax.max` over the window's elements (NaN-propagating, as
    # PyTorch's), elementwise so that it fuses with its producers (a `reduce` here becomes a YNNPACK fusion on
    # CPU, which materialises each producer: several times slower after LeNet-5's first convolution).
    return functools.reduce(lax.max, _window_elements(xr, window_axes))


def _window_elements(xr: jax.Array, window_axes: tuple[int, ...]) -> list[jax.Array]:
    """The window's elements in row-major order, each `xr` without its window axes."""
    elements = []
    for position in itertools.product(*(range(xr.shape[a]) for a in window_axes)):
        at = [slice(None)] * xr.ndim
        for a, p in zip(window_axes, position):
            at[a] = p
        elements.append(xr[tuple(at)])
    return elements


def _chosen_tangent(t: jax.Array, index: jax.Array, window_axes: tuple[int, ...]) -> jax.Array:
    """The tangent of each window's chosen element: linear in t; its transpose (the backward pass) is one select."""
    sizes = [t.shape[a] for a in window_axes]
    positions = np.arange(int(np.prod(sizes)), dtype=np.int32).reshape(sizes)
    positions = np.expand_dims(positions, [a for a in range(t.ndim) if a not in window_axes])
    chosen = jnp.expand_dims(index, window_axes) == positions
    return jnp.sum(jnp.where(chosen, t, jnp.zeros((), t.dtype)), axis=window_axes)


@_max_pool_windows.defjvp
def _max_pool_windows_jvp(window_axes, primals, tangents):
    (xr,), (t,) = primals, tangents
    # Differentiated, the maximum and its index come from one reduction (XLA reads each window once for both);
    # `_max_and_index` has a derivative of its own, so derivatives of any order exist.
    best, index = _max_and_index(xr, window_axes)
    return best, _chosen_tangent(t, index, window_axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_and_index(xr: jax.Array, window_axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    return _first_max(xr, window_axes)


@_max_and_index.defjvp
def _max_and_index_jvp(window_axes, primals, tangents):
    (xr,), (t,) = primals, tangents
    best, index = _max_and_index(xr, window_axes)
    # the index is piecewise constant: its tangent is float0 zeros (JAX's tangent type of integers)
    return (best, index), (_chosen_tangent(t, index, window_axes), np.zeros(index.shape, jax.dtypes.float0))


def _max_pool_tiled(x: jax.Array, w: _Windows) -> jax.Array:
    xr, window_axes = _window_view(x, w)
    return _max_pool_windows(xr, window_axes)


def _avg_divisor(w: _Windows, count_include_pad: bool) -> np.ndarray:
    """Per-output divisor, PyTorch's `avg_pool` kernels: the window clipped to input + explicit padding
    (`count_include_pad=True`) or to the input alone (`False`). Static, so computed with numpy."""
    per_dim = []
    for o, s, k, p, size in zip(w.outs, w.stride, w.window, w.padding, w.sizes):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)  # ceil-mode windows hanging past the padding are cut
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        per_dim.append((end - start).astype(np.float64))
    divisor = per_dim[0]
    for d in per_dim[1:]:
        divisor = np.multiply.outer(divisor, d)
    return divisor.reshape(w.full(divisor.shape, 1))


def avg_pool(x: jax.Array, window, *, stride=None, padding=0, ceil_mode: bool = False,
             count_include_pad: bool = True, layout: str = "NHWC") -> jax.Array:
    """Mean over sliding windows of each channel; 1D/2D/3D from `x.ndim`.

    `y[n, c, o] = sum_{k < window} x_padded[n, c, o * stride + k] / divisor[o]`, zero padding, where
    `divisor` follows PyTorch exactly: with `count_include_pad=True` the window size clipped to the input
    plus explicit padding (so ceil-mode windows hanging over the right edge divide by their part inside
    input + padding), with `count_include_pad=False` the number of real input elements in the window.
    Output size per spatial dim: `conv_output_size(size, window, stride=, padding=, ceil_mode=)`.

    Args:
      x: floating `[N, *spatial, C]` (default) or `[N, C, *spatial]` with `layout="NCHW"` etc.
      window, stride, padding, ceil_mode, layout: as in `max_pool`.
      count_include_pad: whether explicit padding counts in the divisor (PyTorch's default True).
    Returns: `[N, *out, C]` or `[N, C, *out]`, dtype of `x` (half precision is summed in float32).
    Raises: as `max_pool`; TypeError for a non-floating input.

    PyTorch: `torch.nn.functional.avg_pool1d/2d/3d` (`divisor_override=None`). One difference: PyTorch's
    `avg_pool3d` (unlike its 1d/2d and `max_pool3d`) refuses an input smaller than the window even when the
    padding makes it fit; here that case follows the 1d/2d semantics.
    """
    x = jnp.asarray(check_array("avg_pool", "x", x))
    w = _windows("avg_pool", x, window, stride, padding, ceil_mode, layout)
    count_include_pad = check_bool("avg_pool", "count_include_pad", count_include_pad)
    acc = _accumulation_dtype("avg_pool", x.dtype)
    sums = w.reduce(x.astype(acc), 0.0, lax.add)
    return (sums / jnp.asarray(_avg_divisor(w, count_include_pad), acc)).astype(x.dtype)


def global_avg_pool(x: jax.Array, *, layout: str = "NHWC", keepdims: bool = False) -> jax.Array:
    """Mean over all spatial positions of each channel.

    Args:
      x: `[N, *spatial, C]` (default) or `[N, C, *spatial]` with `layout="NCHW"` etc.; 1-3 spatial dims.
      layout: where the channels are.
      keepdims: keep the spatial axes with size 1 (`[N, 1, 1, C]`) instead of returning `[N, C]`.
    Returns: `[N, C]` or, with `keepdims`, the rank of `x` with spatial sizes 1.
    Raises: ValueError for a wrong rank or unknown layout; TypeError for a non-array `x`, a non-string
      layout or a non-bool keepdims.

    PyTorch: `x.mean(dim=(2, 3))` or `F.adaptive_avg_pool2d(x, 1)` (`keepdims=True`, `layout="NCHW"`).
    """
    fn = "global_avg_pool"
    x = jnp.asarray(check_array(fn, "x", x))
    lay = spatial_layout(fn, x, layout)
    keepdims = check_bool(fn, "keepdims", keepdims)
    return jnp.mean(x, axis=lay.spatial_axes, keepdims=keepdims)


def _adaptive_bins(size: int, out: int) -> np.ndarray:
    """0/1 matrix `[out, size]`: bin i covers `[floor(i * size / out), ceil((i + 1) * size / out))`."""
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    j = np.arange(size)
    return ((j >= start[:, None]) & (j < end[:, None])).astype(np.float32)


def adaptive_avg_pool(x: jax.Array, output_size, *, layout: str = "NHWC") -> jax.Array:
    """Average pooling to a fixed output size, with PyTorch's (possibly overlapping, unequal) bins.

    Along each spatial dim of size `L` with `O` outputs, output `i` averages input positions
    `floor(i * L / O) <= j < ceil((i + 1) * L / O)`; with `L % O == 0` this is `avg_pool` with window
    and stride `L / O`. `O` may exceed `L` (bins then repeat inputs).

    Args:
      x: floating `[N, *spatial, C]` (default) or `[N, C, *spatial]` with `layout="NCHW"` etc.
      output_size: int >= 1 or one per spatial dim; a None entry keeps that dim's input size.
      layout: where the channels are.
    Returns: `[N, *output_size, C]` or `[N, C, *output_size]`, dtype of `x`.
    Raises: ValueError for a wrong rank, unknown layout or output size < 1; TypeError for a non-int size
      (a bool included), a non-array or non-floating `x` or a non-string layout.

    PyTorch: `torch.nn.functional.adaptive_avg_pool1d/2d/3d`.
    """
    fn = "adaptive_avg_pool"
    x = jnp.asarray(check_array(fn, "x", x))
    lay = spatial_layout(fn, x, layout)
    sizes = tuple(x.shape[a] for a in lay.spatial_axes)
    if isinstance(output_size, Sequence) and not isinstance(output_size, str):
        output_size = tuple(sz if o is None else o for o, sz in zip(output_size, sizes)) + tuple(
            output_size[len(sizes):])
    outs = as_tuple(fn, "output_size", output_size, lay.spatial)
    acc = _accumulation_dtype(fn, x.dtype)
    y = x.astype(acc)
    for axis, size, out in zip(lay.spatial_axes, sizes, outs):
        if size == out:
            continue
        bins = _adaptive_bins(size, out)
        # A 0/1 matrix sums each bin exactly (HIGHEST: no reduced-precision passes on accelerators).
        y = jnp.tensordot(y, jnp.asarray(bins.T, acc), axes=([axis], [0]), precision=lax.Precision.HIGHEST)
        y = jnp.moveaxis(y, -1, axis)
        count = bins.sum(axis=1)
        shape = [1] * y.ndim
        shape[axis] = out
        y = y / jnp.asarray(count.reshape(shape), acc)
    return y.astype(x.dtype)

