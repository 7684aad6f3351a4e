"""Convolution, the shared output-size formula, and the dense (linear) layer.

`conv_output_size` is THE output-size formula of this package: `conv` uses it to check its arguments and
`pooling` calls it for `max_pool`/`avg_pool` (including PyTorch's ceil-mode rule).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxnets.checks import as_tuple, check_array, check_bool, check_float_input, check_int, is_int, spatial_layout
from jaxnets.layers.switch import Switch
from jaxnets.layers.population import conv_general

Padding = int | str | Sequence[int] | Sequence[tuple[int, int]]


def _promoted_dtype(x: jax.Array, kernel: jax.Array):
    # Mixed dtypes (bfloat16 activations, float32 weights) compute in JAX's standard promotion of the two,
    # asked for explicitly so that it also holds under jax_numpy_dtype_promotion="strict".
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(x, kernel)


def _output_size(fn: str, what: str, dim: int, size: int, kernel: int, stride: int, pad_lo: int,
                 pad_hi: int, dilation: int, ceil_mode: bool) -> int:
    """The output-size formula on validated ints; raises if the (dilated) window does not fit.

    `out = floor_or_ceil((size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) / stride) + 1`, and in ceil
    mode `out -= 1` when `(out - 1) * stride >= size + pad_lo` (PyTorch's `pooling_output_shape_pad_lr`:
    the last window must start inside the input or the left padding).
    """
    extent = dilation * (kernel - 1) + 1
    span = size + pad_lo + pad_hi - extent
    if span < 0:
        dilated = f" (kernel {kernel} dilated by {dilation})" if dilation > 1 else ""
        raise ValueError(f"{fn}: the {what} size {extent}{dilated} is larger than the padded input along spatial "
                         f"dim {dim}: {size} + {pad_lo} + {pad_hi} = {size + pad_lo + pad_hi}. Use a smaller "
                         f"{what}, more padding or a larger input.")
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1  # PyTorch: a window may not start in the right padding
    return out


def _padding_pairs(fn: str, padding, sizes: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                   dilation: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Resolve `padding` into one `(low, high)` pair per spatial dimension.

    Accepts an int (same on both sides of every dim), a per-dim tuple whose entries are ints or
    `(low, high)` pairs, or `"SAME"`/`"VALID"` (any case). SAME gives `ceil(size / stride)` outputs
    with total padding `max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)`, the smaller half
    on the low side (`lax.padtype_to_pads`; equals PyTorch's `padding="same"` where that exists, stride 1).
    """
    n = len(sizes)
    expected = (f"an int >= 0, a tuple of {n} ints or of {n} (low, high) pairs, or 'SAME'/'VALID'")
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "SAME":
            pairs = []
            for size, k, s, d in zip(sizes, kernel, stride, dilation):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"{fn}: padding must be {expected}, got {padding!r}.")
    if is_int(padding):
        pairs = ((padding, padding),) * n
    elif isinstance(padding, Sequence):
        if len(padding) != n:
            raise ValueError(f"{fn}: padding must be {expected} for this {n}-D input, got {padding!r} "
                             f"of length {len(padding)}.")
        pairs = []
        for p in padding:
            if is_int(p):
                pairs.append((p, p))
            elif isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2 and all(map(is_int, p)):
                pairs.append((p[0], p[1]))
            elif isinstance(p, Sequence) and not isinstance(p, str) and all(map(is_int, p)):
                raise ValueError(f"{fn}: padding must be {expected}; entry {p!r} of {padding!r} is neither an "
                                 f"int nor a (low, high) pair of ints.")
            else:
                raise TypeError(f"{fn}: padding must be {expected}; entry {p!r} of {padding!r} is neither an "
                                f"int nor a (low, high) pair of ints.")
        pairs = tuple(pairs)
    else:
        raise TypeError(f"{fn}: padding must be {expected}, got {type(padding).__name__} {padding!r}.")
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"{fn}: padding must be >= 0 (no cropping), got {padding!r}.")
    return pairs


def conv_output_size(size, kernel, *, stride=1, padding=0, dilation=1, ceil_mode: bool = False):
    """Output length of a convolution or pooling window along each spatial dimension.

    `out = floor((size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) / stride) + 1`; with
    `ceil_mode=True` the division rounds up, then PyTorch's rule applies: if the last window would start
    at or beyond `size + pad_lo` (inside the right padding), `out -= 1`. This is the formula of
    PyTorch's `pooling_output_shape_pad_lr` (aten `Pool.h`) and of `torch.nn.Conv2d`'s documentation.

    Args:
      size: input length, an int, or a tuple of ints (one per spatial dim).
      kernel: kernel/window length, an int >= 1 or a tuple like `size`.
      stride: int >= 1 or tuple like `size`.
      padding: for an int `size`: an int (both sides), a `(low, high)` pair, or `"SAME"`/`"VALID"`;
        for a tuple `size`: an int, a per-dim tuple of ints or of `(low, high)` pairs, or `"SAME"`/`"VALID"`.
      dilation: int >= 1 or tuple like `size`.
      ceil_mode: round up instead of down (pooling only in PyTorch).
    Returns: an int for an int `size`, else a tuple of ints.
    Raises:
      ValueError: if the dilated kernel is larger than the padded input, or for a bad argument.
      TypeError: for arguments that are not ints/tuples.
    """
    fn = "conv_output_size"
    scalar = is_int(size)
    n = 1 if scalar else (len(size) if isinstance(size, Sequence) else 1)
    sizes = as_tuple(fn, "size", size, n, minimum=0)
    kernel = as_tuple(fn, "kernel", kernel, n)
    stride = as_tuple(fn, "stride", stride, n)
    dilation = as_tuple(fn, "dilation", dilation, n)
    ceil_mode = check_bool(fn, "ceil_mode", ceil_mode)
    if scalar and isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 2:
        padding = (tuple(padding),)  # an int size takes a single (low, high) pair
    pads = _padding_pairs(fn, padding, sizes, kernel, stride, dilation)
    outs = tuple(_output_size(fn, "kernel", i, sz, k, s, lo, hi, d, ceil_mode)
                 for i, (sz, k, s, (lo, hi), d) in enumerate(zip(sizes, kernel, stride, pads, dilation)))
    return outs[0] if scalar else outs


def conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None, *, stride=1, padding: Padding = 0,
         dilation=1, groups: int = 1, layout: str = "NHWC") -> jax.Array:
    """N-D convolution (cross-correlation, as in every deep-learning library); 1D/2D/3D from `x.ndim`.

    `y[n, o, p] = bias[o] + sum_{c in group(o), k} x_padded[n, c, p * stride + k * dilation] * w[o, c, k]`,
    where the input channels are split into `groups` equal groups, each seen by `C_out / groups` outputs.
    Output length per spatial dim: `conv_output_size(size, kernel, stride=, padding=, dilation=)`.

    Args:
      x: `[N, *spatial, C_in]` (channels-last, default) or `[N, C_in, *spatial]` (`layout="NCHW"` etc.).
      kernel: channels-last `[*spatial_k, C_in / groups, C_out]` (`WIO`/`HWIO`/`DHWIO`); channels-first
        `[C_out, C_in / groups, *spatial_k]` (`OIW`/`OIHW`/`OIDHW`: exactly a PyTorch conv weight).
      bias: `[C_out]` or None.
      stride: int >= 1 or one per spatial dim.
      padding: an int (both sides of every dim), a per-dim tuple of ints or of `(low, high)` pairs, or
        `"SAME"` (output `ceil(size / stride)`, the odd extra pixel on the high side) / `"VALID"` (none).
        Zero padding; negative padding is rejected.
      dilation: int >= 1 or one per spatial dim (spacing of the kernel taps).
      groups: int >= 1 dividing `C_in` and `C_out`; `groups == C_in` is a depthwise conv.
      layout: `"NWC"/"NHWC"/"NDHWC"` or `"NCW"/"NCHW"/"NCDHW"`; only where the channels are matters.
    Returns: `[N, *out_spatial, C_out]` or `[N, C_out, *out_spatial]`, the layout of `x`, in the promoted
      dtype of `x` and `kernel`. Precision follows `jax_default_matmul_precision` (on GPUs the default may
      use TF32; set it to `"highest"` for float32 parity with PyTorch's CPU results). Where an input spatial
      size is smaller than the (dilated) kernel (e.g. a 2x2 map, 3x3 kernel, padding 1) the padding is
      materialised and the conv and its data gradient run with padding 0: the same numbers, avoiding a slow
      path of XLA's CPU convolution on such inputs (measured in benchmarks/README.md). On CPU, a forward pass
      with one input channel and a data gradient with at most 8 are computed without XLA's convolution
      (`layers/conv_formulations.py`): the same numbers up to float rounding.
    Raises:
      ValueError: wrong rank of `x`, kernel rank different from `x`, channel mismatch between `x` and
        `kernel`, `groups` not dividing `C_in` or `C_out`, (dilated) kernel larger than the padded input,
        bias not `[C_out]`, unknown layout, bad padding/stride/dilation.
      TypeError: `x`, `kernel` or `bias` not an array; non-int `groups`/`stride`/`dilation` or a padding of
        the wrong type; a layout that is not a string.

    PyTorch: `torch.nn.functional.conv1d/conv2d/conv3d` (with `layout="NCHW"` and the same weight);
    asymmetric padding corresponds to `F.pad` followed by the conv.
    """
    fn = "conv"
    x, kernel = jnp.asarray(check_array(fn, "x", x)), jnp.asarray(check_array(fn, "kernel", kernel))
    check_float_input(fn, "x", x)
    groups = check_int(fn, "groups", groups, minimum=1)
    lay = spatial_layout(fn, x, layout)
    n = lay.spatial
    if kernel.ndim != x.ndim:
        form = "[*spatial, C_in/groups, C_out]" if lay.channels_last else "[C_out, C_in/groups, *spatial]"
        raise ValueError(f"conv: kernel must have the rank of x ({x.ndim}-D x means a {x.ndim}-D kernel {form} "
                         f"for layout {lay.name}), got kernel shape {tuple(kernel.shape)}.")
    if lay.channels_last:
        k_spatial, k_in, c_out = kernel.shape[:n], kernel.shape[n], kernel.shape[n + 1]
    else:
        c_out, k_in, k_spatial = kernel.shape[0], kernel.shape[1], kernel.shape[2:]
    c_in = x.shape[lay.channel_axis]
    if c_in % groups:
        raise ValueError(f"conv: groups={groups} does not divide the {c_in} input channels of x "
                         f"(shape {tuple(x.shape)}, layout {lay.name}).")
    if c_out % groups:
        raise ValueError(f"conv: groups={groups} does not divide the {c_out} output channels of the kernel "
                         f"(shape {tuple(kernel.shape)}).")
    if k_in * groups != c_in:
        form = "[*spatial, C_in/groups, C_out]" if lay.channels_last else "[C_out, C_in/groups, *spatial]"
        raise ValueError(f"conv: x has {c_in} channels but the kernel (shape {tuple(kernel.shape)}) expects "
                         f"{k_in} per group x groups={groups} = {k_in * groups} (layout {lay.name}: the kernel is "
                         f"{form}).")
    if any(k < 1 for k in k_spatial):
        raise ValueError(f"conv: kernel spatial sizes must be >= 1, got kernel shape {tuple(kernel.shape)}.")
    stride = as_tuple(fn, "stride", stride, n)
    dilation = as_tuple(fn, "dilation", dilation, n)
    sizes = tuple(x.shape[a] for a in lay.spatial_axes)
    pads = _padding_pairs(fn, padding, sizes, k_spatial, stride, dilation)
    for i, (sz, k, s, (lo, hi), d) in enumerate(zip(sizes, k_spatial, stride, pads, dilation)):
        _output_size(fn, "kernel", i, sz, k, s, lo, hi, d, False)  # raises if the kernel does not fit
    if bias is not None:
        bias = jnp.asarray(check_array(fn, "bias", bias))
        if bias.shape != (c_out,):
            raise ValueError(f"conv: bias must have shape ({c_out},) (= C_out), got {tuple(bias.shape)}.")
    dtype = _promoted_dtype(x, kernel)
    spec = lay.name
    kspec = spec[1:-1] + "IO" if lay.channels_last else "OI" + spec[2:]
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    if _EXPLICIT_PADDING.enabled and _input_smaller_than_kernel(sizes, k_spatial, dilation):
        y = _conv_explicit_padding(x, kernel, stride, pads, dilation, groups, (spec, kspec, spec))
    else:
        # lax.conv_general_dilated, with batching rules for a population (a vmapped kernel): layers.population
        y = conv_general(x, kernel, strides=stride, padding=pads, dilation=dilation,
                         dimension_numbers=(spec, kspec, spec), groups=groups)
    if bias is not None:
        shape = [1] * y.ndim
        shape[lay.channel_axis] = c_out
        y = y + bias.astype(dtype).reshape(shape)
    return y


# ----------------------------------------------------------------------------------------------
# Inputs smaller than the kernel: materialised padding (an XLA CPU performance cliff)
# ----------------------------------------------------------------------------------------------
# XLA's CPU convolution is much slower when an input spatial size is smaller than the (dilated) kernel and
# the padding makes up the difference, e.g. CIFAR VGG's last convs: [128, 2, 2, 512] input, 3x3 kernel,
# padding 1 (the measurements are in benchmarks/README.md). For those inputs (and only those: on
# larger inputs the explicit pad is slower) `conv` pads with `lax.pad`, hides the result from XLA's
# algebraic simplifier behind `optimization_barrier` (else it folds the pad back into the conv), and runs
# the conv with padding 0; the data gradient, a conv of the equally small cotangent, gets the same
# treatment in a custom JVP (`_conv_explicit_padding`). Switched only through `explicit_padding` (the tests and
# benchmarks compare against the plain conv); it is not a user option.
_EXPLICIT_PADDING = Switch("explicit_padding")


def explicit_padding(enabled: bool):
    """Within the block, `conv` on inputs smaller than the kernel materialises the padding (True, the
    default) or runs the plain `lax.conv_general_dilated` (False). Read at TRACE time: a function jitted
    inside the block keeps the choice. For tests and benchmarks (same numbers, other XLA kernels).
    """
    return _EXPLICIT_PADDING.set(enabled)


def _input_smaller_than_kernel(sizes: Sequence[int], kernel: Sequence[int], dilation: Sequence[int]) -> bool:
    return any(size < d * (k - 1) + 1 for size, k, d in zip(sizes, kernel, dilation))


def _pad_spatial(x: jax.Array, spatial_axes: Sequence[int], pads: Sequence[tuple[int, int]],
                 interior: Sequence[int] | None = None) -> jax.Array:
    """`x` zero-padded (negative: cropped) along `spatial_axes`, behind an optimization barrier."""
    config = [(0, 0, 0)] * x.ndim
    for i, (a, (lo, hi)) in enumerate(zip(spatial_axes, pads)):
        config[a] = (lo, hi, 0 if interior is None else interior[i])
    return lax.optimization_barrier(lax.pad(x, jnp.zeros((), x.dtype), config))


def _spatial_axes(spec: str) -> tuple[int, ...]:
    return tuple(i for i, ch in enumerate(spec) if ch not in "NCIO")


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _conv_explicit_padding(x, kernel, stride, pads, dilation, groups, dimension_numbers):
    """`lax.conv_general_dilated(x, kernel, stride, pads, rhs_dilation=dilation, ...)`, computed on the
    explicitly padded `x` with padding 0 (see `_EXPLICIT_PADDING`); same numbers, other XLA kernels.

    A custom JVP, so forward mode (`jvp`, `jacfwd`) works as well as reverse mode. The conv is bilinear:
    `dy = conv(dx, kernel) + conv(x, dkernel)`. The `dkernel` term is the valid conv of the padded `x`, whose
    transpose is the usual weight gradient. The `dx` term is written as the linear transpose of
    `_conv_data_gradient` (the data gradient on the equally small cotangent, explicitly padded), so that
    JAX's transpose of it, the reverse-mode data gradient, is that function again and not a padded conv of
    the small cotangent (the cliff)."""
    xp = _pad_spatial(x, _spatial_axes(dimension_numbers[0]), pads)
    return _valid_conv(xp, kernel, stride, dilation, groups, dimension_numbers)


def _valid_conv(xp, kernel, stride, dilation, groups, dimension_numbers):
    return lax.conv_general_dilated(xp, kernel, window_strides=stride, padding=[(0, 0)] * len(stride),
                                    rhs_dilation=dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=groups)


@_conv_explicit_padding.defjvp
def _conv_explicit_padding_jvp(stride, pads, dilation, groups, dimension_numbers, primals, tangents):
    x, kernel = primals
    dx, dkernel = tangents
    xp = _pad_spatial(x, _spatial_axes(dimension_numbers[0]), pads)
    y = _valid_conv(xp, kernel, stride, dilation, groups, dimension_numbers)
    data_grad = functools.partial(_conv_data_gradient, x.shape, kernel, stride, pads, dilation, groups,
                                  dimension_numbers)
    # conv(., kernel) is the transpose of the data gradient; transposing it back (reverse mode) gives
    # `_conv_data_gradient` itself, explicitly padded.
    (dy_x,) = jax.linear_transpose(data_grad, jax.ShapeDtypeStruct(y.shape, y.dtype))(dx.astype(y.dtype))
    dy_k = _valid_conv(xp, dkernel.astype(y.dtype), stride, dilation, groups, dimension_numbers)
    return y, dy_x + dy_k


def _conv_data_gradient(x_shape, kernel, stride, pads, dilation, groups, dimension_numbers, dy):
    """The cotangent of `x` for the cotangent `dy` of `_conv_explicit_padding(x, kernel, ...)`, `x_shape`."""
    spec, kspec, _ = dimension_numbers
    axes, kaxes = _spatial_axes(spec), _spatial_axes(kspec)
    # The transposed conv, dx = conv(dy dilated by the stride and padded, flipped kernel with in/out swapped
    # per group), evaluated only on the rows of x (not on its padding): along each spatial dim with padded
    # size P, extent e = d (k - 1) + 1 and r = (P - e) % s rows the forward never reached, dy is padded by
    # (e - 1 - lo, e - 1 + r - hi) with s - 1 zeros between its entries; then a valid conv.
    dy_pads = []
    for a, ka, (lo, hi), s, d in zip(axes, kaxes, pads, stride, dilation):
        extent = d * (kernel.shape[ka] - 1) + 1
        rest = (x_shape[a] + lo + hi - extent) % s
        dy_pads.append((extent - 1 - lo, extent - 1 + rest - hi))
    dy_p = _pad_spatial(dy, axes, dy_pads, interior=[s - 1 for s in stride])
    # Kernel [*k, I = C_in / G, O = C_out] (in kspec's order) -> flipped [*k, C_out / G, C_in] (grouped).
    i_axis, o_axis = kspec.index("I"), kspec.index("O")
    w = jnp.transpose(lax.rev(kernel, kaxes), kaxes + (i_axis, o_axis))
    *k, c_in_g, c_out = w.shape
    w = w.reshape(*k, c_in_g, groups, c_out // groups)
    w = jnp.swapaxes(w, -1, -3).reshape(*k, c_out // groups, groups * c_in_g)
    spatial = "".join(kspec[a] for a in kaxes)
    return lax.conv_general_dilated(dy_p, w, window_strides=(1,) * len(axes), padding=[(0, 0)] * len(axes),
                                    rhs_dilation=dilation, dimension_numbers=(spec, spatial + "IO", spec),
                                    feature_group_count=groups)


def linear(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """Dense layer `y = x @ kernel + bias`.

    Args:
      x: `[..., in]`.
      kernel: `[in, out]` (the transpose of a PyTorch `nn.Linear` weight, which is `[out, in]`).
      bias: `[out]` or None.
    Returns: `[..., out]` in the promoted dtype of `x` and `kernel` (JAX's standard promotion, also under
      strict dtype promotion). Precision follows `jax_default_matmul_precision`.
    Raises: ValueError if `kernel` is not 2-D, `x` is a scalar, `x.shape[-1] != in` or bias is not `[out]`;
      TypeError if `x`, `kernel` or `bias` is not an array.

    PyTorch: `torch.nn.functional.linear(x, kernel.T, bias)`.
    """
    fn = "linear"
    x, kernel = jnp.asarray(check_array(fn, "x", x)), jnp.asarray(check_array(fn, "kernel", kernel))
    check_float_input(fn, "x", x)
    if kernel.ndim != 2:
        raise ValueError(f"linear: kernel must be 2-D [in, out], got shape {tuple(kernel.shape)}.")
    if x.ndim < 1 or x.shape[-1] != kernel.shape[0]:
        raise ValueError(f"linear: x must have shape [..., {kernel.shape[0]}] to match kernel [in, out] = "
                         f"{tuple(kernel.shape)}, got {tuple(x.shape)}. (A PyTorch weight is [out, in]: pass its .T)")
    dtype = _promoted_dtype(x, kernel)
    y = jnp.matmul(x.astype(dtype), kernel.astype(dtype))
    if bias is not None:
        bias = jnp.asarray(check_array(fn, "bias", bias))
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"linear: bias must have shape ({kernel.shape[1]},) (= out), got {tuple(bias.shape)}.")
        y = y + bias.astype(y.dtype)
    return y
