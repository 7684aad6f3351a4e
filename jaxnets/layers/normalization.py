"""Normalization layers: batch, layer, group and instance norm, and folding batch norm into a conv.

Every function here computes its statistics with one helper, `masked_moments` (two-pass mean and biased
variance, in float32 or wider), so the formula lives in one place. Outputs have the dtype of `x`.

PyTorch equivalents: `torch.nn.BatchNorm1d/2d/3d` (and `SyncBatchNorm` for `axis_name`),
`torch.nn.LayerNorm`, `torch.nn.GroupNorm`, `torch.nn.InstanceNorm1d/2d/3d(affine=True)`.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxnets.checks import (at_least_float32, check_array, check_bool, check_floating,
                            check_positive_int, check_real, is_channels_last, is_int, kernel_is_channels_last,
                            renamed_keyword, spatial_layout)
from jaxnets.layers.switch import Switch

__all__ = [
    "batch_norm",
    "init_batch_norm",
    "fold_batch_norm",
    "layer_norm",
    "init_layer_norm",
    "group_norm",
    "init_group_norm",
    "instance_norm",
    "init_instance_norm",
]

# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------

def _stats_dtype(dtype) -> jnp.dtype:
    # Statistics in float32 at least: a bf16/fp16 sum over a large batch keeps only 8/11 mantissa bits.
    return at_least_float32(dtype)


def masked_moments(x: jax.Array, axes: tuple[int, ...], *, mask: jax.Array | None = None,
             axis_name=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean and biased variance of `x` over `axes` (kept as size-1 axes), and the element count.

    `mask` ([N] bool, only with 0 in `axes`) keeps the rows of axis 0 where it is True; `axis_name`
    sums the partial sums and counts across devices, so the result is exact for any split of the batch.
    """
    if mask is None:
        count = jnp.asarray(math.prod(x.shape[a] for a in axes), x.dtype)
        total = jnp.sum(x, axis=axes, keepdims=True)
    else:
        rows = mask.reshape((-1,) + (1,) * (x.ndim - 1))
        per_row = math.prod(x.shape[a] for a in axes if a != 0)
        count = jnp.sum(mask, dtype=x.dtype) * per_row
        # where, not multiply: padding rows may hold anything, even inf or NaN.
        total = jnp.sum(jnp.where(rows, x, 0), axis=axes, keepdims=True)
    if axis_name is not None:
        # psum of sums and counts, not pmean of per-device means: exact when devices hold different counts.
        total, count = jax.lax.psum((total, count), axis_name)
    # max(count, 1): an all-padding batch gives mean 0 and variance 0 instead of 0/0 = NaN.
    denom = jnp.maximum(count, 1)
    mean = total / denom
    dev = x - mean
    if mask is not None:
        dev = jnp.where(rows, dev, 0)
    # Two-pass variance, mean((x - mean)^2): E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std.
    sq = jnp.sum(jnp.square(dev), axis=axes, keepdims=True)
    if axis_name is not None:
        sq = jax.lax.psum(sq, axis_name)
    return mean, sq / denom, count


def _check_params(fn: str, params, names: tuple[str, ...], shape: tuple[int, ...], what: str,
                  hint: str = "", arg: str = "params") -> None:
    """Check that `params` is a mapping holding arrays of `shape` under each of `names`."""
    if not isinstance(params, Mapping) or any(n not in params for n in names):
        got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
        raise ValueError(f"{fn}: {arg} must be a dict with keys {list(names)}, got {got}.")
    for n in names:
        got = tuple(jnp.shape(params[n]))
        if got != shape:
            raise ValueError(f"{fn}: {arg}[{n!r}] has shape {got} but {what} {shape}.{hint}")


def _channel_shape(ndim: int, channel_axis: int, c: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector of length `c` along `channel_axis`."""
    shape = [1] * ndim
    shape[channel_axis] = c
    return tuple(shape)


def _affine(xhat: jax.Array, params, shape: tuple[int, ...], dtype) -> jax.Array:
    """xhat * scale + bias, in the statistics dtype, then cast back to the dtype of the input."""
    sdt = xhat.dtype
    scale = jnp.reshape(params["scale"], shape).astype(sdt)
    bias = jnp.reshape(params["bias"], shape).astype(sdt)
    return (xhat * scale + bias).astype(dtype)


def _input(fn: str, x) -> jax.Array:
    """`x` as a floating jax array: TypeError naming `fn` for a non-array or a non-floating dtype."""
    x = jnp.asarray(check_array(fn, "x", x))  # numpy float64 becomes float32 unless x64 is enabled
    check_floating(fn, "x", x)
    return x


def _eps(fn: str, eps) -> float:
    return check_real(fn, "eps", eps, minimum=0.0)


def _norm_layout(fn: str, x: jax.Array, layout: str, *, allow_nc: bool
                 ) -> tuple[int, tuple[int, ...]]:
    """(channel axis, spatial axes) of `x`: [N, C] when allowed, else [N, *spatial, C] / [N, C, *spatial]."""
    channels_last = is_channels_last(fn, layout)
    if x.ndim == 2 and allow_nc:
        return 1, ()
    if not 3 <= x.ndim <= 5:
        shapes = "[N, C], " if allow_nc else ""
        shapes += "[N, *spatial, C]" if channels_last else "[N, C, *spatial]"
        raise ValueError(f"{fn}: expected x of shape {shapes} with 1 to 3 spatial dims "
                         f"(layout={layout!r}), got shape {tuple(x.shape)}.")
    lay = spatial_layout(fn, x, layout)
    return lay.channel_axis % x.ndim, lay.spatial_axes


# ----------------------------------------------------------------------------------------------
# batch norm
# ----------------------------------------------------------------------------------------------

def init_batch_norm(num_features: int, dtype=jnp.float32) -> tuple[dict, dict]:
    """Parameters and running state of a fresh batch norm (PyTorch's defaults).

    Returns: `(params, state)`: `params = {"scale": ones [C], "bias": zeros [C]}`,
      `state = {"mean": zeros [C], "var": ones [C]}`.
    Raises: TypeError if `num_features` is not an int; ValueError if it is not positive.
    """
    c = check_positive_int("init_batch_norm", "num_features", num_features)
    params = {"scale": jnp.ones((c,), dtype), "bias": jnp.zeros((c,), dtype)}
    state = {"mean": jnp.zeros((c,), dtype), "var": jnp.ones((c,), dtype)}
    return params, state


def batch_norm(x: jax.Array, params: Mapping, state: Mapping, *, train: bool, momentum: float = 0.1,
               eps: float = 1e-5, axis_name=None, mask: jax.Array | None = None,
               layout: str = "NHWC") -> tuple[jax.Array, dict]:
    """Batch normalisation: per-channel statistics over the batch and spatial axes.

    `y = (x - mean) / sqrt(var + eps) * scale + bias`, with the batch mean and the BIASED batch
    variance when `train=True`, the running `state` when `train=False`. In training the running
    statistics are updated as in PyTorch:

        new_mean = (1 - momentum) * mean_old + momentum * batch_mean
        new_var  = (1 - momentum) * var_old  + momentum * batch_var * n / (n - 1)   (UNBIASED)

    where `n` is the number of values per channel (N * spatial size, summed over devices and
    counting only valid rows). Note `momentum` is PyTorch's (weight of the NEW batch), i.e.
    `1 - momentum` of Flax/Keras. Statistics are computed in float32 (or wider), two-pass.
    Without `mask` and `axis_name` the training path has a closed-form derivative (a custom JVP,
    `_batch_norm_train`, whose transpose is the closed-form backward) that works in forward and reverse
    mode and stores no `x - mean`; the forward is the same computation. The masked and synchronised paths
    use autodiff.

    Args:
      x: `[N, C]` (BatchNorm1d), or `[N, *spatial, C]` (channels-last, default: `NWC`, `NHWC`,
        `NDHWC`) / `[N, C, *spatial]` (`layout="NCW"/"NCHW"/"NCDHW"`), 1 to 3 spatial dims.
      params: `{"scale": [C], "bias": [C]}`.
      state: `{"mean": [C], "var": [C]}` running statistics.
      train: required Python bool.
      momentum: Python float in [0, 1], weight of the batch statistics in the running update.
      eps: added to the variance.
      axis_name: mapped axis name (or tuple of names) for synchronised batch norm under
        `shard_map`/`pmap`/`vmap`: the statistics are global, `psum(sum) / psum(count)`, exact even
        when devices hold different numbers of valid rows; `n` above is then the global count.
      mask: optional `[N]` bool (or 0/1) array, True for valid rows. Invalid rows (padding of a
        ragged batch) are excluded from the statistics and counts; their outputs are still computed.
        If, at run time, fewer than 2 values per channel are valid (globally), the running state is
        returned unchanged for that step (PyTorch refuses such batches; under `jit` we cannot raise),
        and an all-invalid batch normalises with mean 0, variance 0 instead of producing NaN.
      layout: where the channels are; the rank comes from `x`. Ignored for `[N, C]` inputs.

    Returns: `(y, new_state)`; `y` has the shape and dtype of `x`; `new_state` has the dtypes of
      `state`. With `train=False`, `new_state` is `state` itself (the same objects).

    Raises:
      TypeError: `train` not a bool, `x` not a floating array, `momentum` or `eps` not a real number (a bool
        included), a layout that is not a string.
      ValueError: wrong rank, unknown layout, `params`/`state` not `[C]` for the `C` of `x`,
        `momentum` outside [0, 1], `eps` < 0, `mask` not `[N]`, or (training, no `axis_name`) a single
        value per channel: PyTorch's "Expected more than 1 value per channel when training". (With
        `axis_name` the global count is known only at run time; see `mask` for what happens then.)

    PyTorch: `torch.nn.BatchNorm1d/2d/3d(C, eps, momentum)`; `torch.nn.SyncBatchNorm` with `axis_name`.
    """
    fn = "batch_norm"
    train = check_bool(fn, "train", train)
    x = _input(fn, x)
    if momentum is None:
        raise TypeError(f"{fn}: momentum must be a real number in [0, 1] (the weight of the new batch), got None: "
                        f"PyTorch's cumulative average, momentum=None, is not supported.")
    momentum = check_real(fn, "momentum", momentum, minimum=0.0, maximum=1.0)
    eps = _eps(fn, eps)
    channel_axis, _ = _norm_layout(fn, x, layout, allow_nc=True)
    c = x.shape[channel_axis]
    hint = "" if x.ndim == 2 else (" For NCHW arrays pass layout='NCHW'." if channel_axis == x.ndim - 1
                                   else " For channels-last arrays pass layout='NHWC'.")
    _check_params(fn, params, ("scale", "bias"), (c,), f"x of shape {tuple(x.shape)} has C =",
                  hint=hint)
    _check_params(fn, state, ("mean", "var"), (c,), f"x of shape {tuple(x.shape)} has C =",
                  hint=hint, arg="state")
    bshape = _channel_shape(x.ndim, channel_axis, c)
    sdt = _stats_dtype(x.dtype)
    x32 = x.astype(sdt)

    if not train:
        mean = jnp.reshape(state["mean"], bshape).astype(sdt)
        var = jnp.reshape(state["var"], bshape).astype(sdt)
        return _affine((x32 - mean) * jax.lax.rsqrt(var + eps), params, bshape, x.dtype), state

    axes = tuple(a for a in range(x.ndim) if a != channel_axis)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (x.shape[0],):
            raise ValueError(f"{fn}: mask must have shape [N] = ({x.shape[0]},) for x of shape "
                             f"{tuple(x.shape)}, got {tuple(mask.shape)}.")
        mask = mask if mask.dtype == jnp.bool_ else mask != 0
    if axis_name is None and math.prod(x.shape[a] for a in axes) == 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, got x of shape "
                         f"{tuple(x.shape)}; use a larger batch or train=False.")
    if _FAST_TRAIN_PATH.enabled and mask is None and axis_name is None:
        y, mean, var = _batch_norm_train(x, params["scale"], params["bias"], eps, axes)
        count = jnp.asarray(math.prod(x.shape[a] for a in axes), sdt)
    else:
        mean, var, count = masked_moments(x32, axes, mask=mask, axis_name=axis_name)
        y = _affine((x32 - mean) * jax.lax.rsqrt(var + eps), params, bshape, x.dtype)

    # Running variance takes the UNBIASED batch variance, n / (n - 1) with the global count n (PyTorch).
    unbiased = var * (count / jnp.maximum(count - 1, 1))
    enough = count > 1  # fewer than 2 valid values: keep the old running statistics (see `mask`).
    new_state = {}
    for name, batch in (("mean", mean), ("var", unbiased)):
        old = jnp.asarray(state[name])
        new = (1.0 - momentum) * old.astype(sdt) + momentum * batch.reshape(c)
        new_state[name] = jnp.where(enough, new, old.astype(sdt)).astype(old.dtype)
    return y, new_state


# The training path of `batch_norm` with a hand-written derivative (used when mask is None and axis_name is
# None; the masked and the synchronised paths go through autodiff of `masked_moments`). Switched only through
# `closed_form_derivative` (tests and benchmarks compare the two paths); it is not a user option.
_FAST_TRAIN_PATH = Switch("closed_form_derivative")


def closed_form_derivative(enabled: bool):
    """Within the block, training-mode `batch_norm` uses (True, the default) or bypasses (False: autodiff of
    the plain two-pass forward) its closed-form derivative. Read at TRACE time: a function jitted inside
    the block keeps the choice. For tests and benchmarks that compare the two paths (same forward; the
    gradients agree to float32 rounding).
    """
    return _FAST_TRAIN_PATH.set(enabled)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def _batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float, axes: tuple[int, ...]
                      ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(y, mean, var)` of training-mode batch norm over `axes` (no mask, no axis_name).

    The forward is exactly the reference path's: `masked_moments` (two-pass, float32 or wider) and `_affine`.
    The derivative is a custom JVP in closed form, so forward mode (`jvp`, `jacfwd`, `hessian`) works, and
    JAX's transpose of it is the closed-form backward of Ioffe & Szegedy (2015). With `xhat = (x - mean) *
    inv_std`, `n` values per channel and `<.>` the per-channel mean over `axes`, the tangents are

        s      = <xhat * dx>
        dy     = scale * inv_std * (dx - <dx> - xhat * s) + dscale * xhat + dbias
        dmean  = <dx>,   dvar = 2 * s / inv_std          (= 2 <(x - mean) dx>, as <x - mean> = 0)

    and the transpose gives, for cotangents (gy, gmean, gvar), `dbias = sum(gy)`, `dscale = sum(gy * xhat)`,
    `dx = scale * inv_std / n * (n gy - dbias - xhat * dscale) + gmean / n + gvar * 2 (x - mean) / n`.
    The linear part needs only `xhat` and per-channel vectors; autodiff of the two-pass forward also keeps
    `x - mean` and makes more passes over activation-sized arrays.
    """
    return _batch_norm_train_forward(x, scale, bias, eps, axes)[0]


def _batch_norm_train_forward(x, scale, bias, eps, axes):
    """`((y, mean [C], var [C]), (xhat, inv_std))`, the statistics in float32 (or wider), kept-dims shapes."""
    sdt = _stats_dtype(x.dtype)
    x32 = x.astype(sdt)
    mean, var, _ = masked_moments(x32, axes)
    inv = jax.lax.rsqrt(var + eps)
    shape = mean.shape
    xhat = (x32 - mean) * inv
    y = _affine(xhat, {"scale": scale, "bias": bias}, shape, x.dtype)
    c = math.prod(shape)
    return (y, mean.reshape(c), var.reshape(c)), (xhat, inv)


@_batch_norm_train.defjvp
def _batch_norm_train_jvp(eps, axes, primals, tangents):
    x, scale, bias = primals
    dx, dscale, dbias = tangents
    out, (xhat, inv) = _batch_norm_train_forward(x, scale, bias, eps, axes)
    shape = inv.shape
    sdt = inv.dtype
    dx32 = dx.astype(sdt)
    # Per-channel means of dx and xhat * dx: the only reductions over activation-sized arrays in the linear map.
    dmean = jnp.mean(dx32, axis=axes, keepdims=True)
    s = jnp.mean(xhat * dx32, axis=axes, keepdims=True)
    scale32 = jnp.reshape(scale, shape).astype(sdt)
    dy = (scale32 * inv) * (dx32 - dmean - xhat * s)
    dy = dy + jnp.reshape(dscale, shape).astype(sdt) * xhat + jnp.reshape(dbias, shape).astype(sdt)
    c = math.prod(shape)
    dvar = 2.0 * s / inv  # d<(x - mean)^2> = 2 <(x - mean) dx> = 2 <xhat dx> / inv_std
    return out, (dy.astype(out[0].dtype), dmean.reshape(c).astype(out[1].dtype), dvar.reshape(c).astype(out[2].dtype))


def fold_batch_norm(kernel: jax.Array, bias: jax.Array | None, bn_params: Mapping, bn_state: Mapping, *,
                    eps: float = 1e-5, kernel_layout: str = "HWIO", layout: str | None = None
                    ) -> tuple[jax.Array, jax.Array]:
    """Fold an eval-mode batch norm into the conv or linear layer before it.

    With `s = scale / sqrt(var + eps)` per output channel:

        kernel' = kernel * s   (along the output-channel axis)
        bias'   = (bias - mean) * s + bn_bias

    so that `layer(x; kernel', bias') == batch_norm(layer(x; kernel, bias), train=False)`.
    Grouped and depthwise kernels fold the same way (the out axis holds all output channels).

    Args:
      kernel: out channels LAST for the `"HWIO"` family (`"IO"` dense `[in, out]`, `"WIO"`, `"HWIO"`,
        `"DHWIO"`), FIRST for the `"OIHW"` family (`"OI"` = torch Linear weight `[out, in]`, `"OIW"`,
        `"OIHW"`, `"OIDHW"`). As for activations, the name picks the family; the rank comes from `kernel`.
      bias: `[O]` or None (treated as zeros).
      bn_params: `{"scale": [O], "bias": [O]}` of the batch norm.
      bn_state: `{"mean": [O], "var": [O]}` running statistics of the batch norm.
      eps: the batch norm's eps.
      kernel_layout: see `kernel`.
      layout: deprecated name of `kernel_layout` (a DeprecationWarning; removed in the next release).
    Returns: `(kernel', bias')`, with the dtypes of `kernel` and of `bias` (or `kernel` if None);
      computed in float32 or wider.
    Raises: ValueError: unknown kernel layout, kernel rank < 2, out-channel mismatch with `bias`/`bn_params`/
      `bn_state`, negative eps. TypeError: a kernel layout that is not a string, a non-array kernel or bias,
      a non-real eps.
    PyTorch: `torch.nn.utils.fusion.fuse_conv_bn_weights` / `fuse_linear_bn_weights`.
    """
    fn = "fold_batch_norm"
    kernel_layout = renamed_keyword(fn, "layout", layout, "kernel_layout", kernel_layout)
    out_last = kernel_is_channels_last(fn, kernel_layout)
    eps = _eps(fn, eps)
    kernel = jnp.asarray(check_array(fn, "kernel", kernel))
    bias = None if bias is None else jnp.asarray(check_array(fn, "bias", bias))
    if kernel.ndim < 2:
        raise ValueError(f"{fn}: kernel must have rank >= 2 ([in, out] or [*window, in, out] for "
                         f"kernel_layout={kernel_layout!r}), got shape {tuple(kernel.shape)}.")
    out_axis = kernel.ndim - 1 if out_last else 0
    o = kernel.shape[out_axis]
    what = f"kernel of shape {tuple(kernel.shape)} (kernel_layout={kernel_layout!r}) has O ="
    if bias is not None and tuple(jnp.shape(bias)) != (o,):
        raise ValueError(f"{fn}: bias has shape {tuple(jnp.shape(bias))} but {what} {(o,)}.")
    _check_params(fn, bn_params, ("scale", "bias"), (o,), what, arg="bn_params")
    _check_params(fn, bn_state, ("mean", "var"), (o,), what, arg="bn_state")
    sdt = _stats_dtype(kernel.dtype)
    s = bn_params["scale"].astype(sdt) * jax.lax.rsqrt(bn_state["var"].astype(sdt) + eps)
    new_kernel = kernel.astype(sdt) * s.reshape(_channel_shape(kernel.ndim, out_axis, o))
    b = jnp.zeros((o,), sdt) if bias is None else bias.astype(sdt)
    new_bias = (b - bn_state["mean"].astype(sdt)) * s + bn_params["bias"].astype(sdt)
    bias_dtype = kernel.dtype if bias is None else bias.dtype
    return new_kernel.astype(kernel.dtype), new_bias.astype(bias_dtype)


# ----------------------------------------------------------------------------------------------
# per-example norms: layer, group, instance
# ----------------------------------------------------------------------------------------------

def init_layer_norm(normalized_shape: int | Sequence[int], dtype=jnp.float32) -> dict:
    """`{"scale": ones, "bias": zeros}` of shape `normalized_shape` (PyTorch's LayerNorm defaults).

    Raises: TypeError if `normalized_shape` is not an int or a tuple of ints (a bool included);
      ValueError if it is empty or holds a size < 1.
    """
    fn = "init_layer_norm"
    shape = (normalized_shape,) if is_int(normalized_shape) else normalized_shape
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"{fn}: normalized_shape must be a positive int or a non-empty tuple of them, "
                        f"got {type(normalized_shape).__name__} {normalized_shape!r}.")
    if len(shape) == 0:
        raise ValueError(f"{fn}: normalized_shape must be a positive int or a non-empty tuple of them, got ().")
    shape = tuple(check_positive_int(fn, "normalized_shape", d) for d in shape)
    return {"scale": jnp.ones(shape, dtype), "bias": jnp.zeros(shape, dtype)}


def layer_norm(x: jax.Array, params: Mapping, *, eps: float = 1e-5) -> jax.Array:
    """Layer normalisation over the trailing dims of `x` that match `params["scale"].shape`.

    `y = (x - mean) / sqrt(var + eps) * scale + bias`, mean and biased variance per example over the
    last `k = params["scale"].ndim` axes (PyTorch's `normalized_shape = scale.shape`).

    Args:
      x: `[..., *normalized_shape]`.
      params: `{"scale": normalized_shape, "bias": normalized_shape}`.
      eps: added to the variance.
    Returns: an array with the shape and dtype of `x`; statistics in float32 or wider.
    Raises: TypeError if `x` is not floating; ValueError if the trailing dims of `x` differ from
      `scale.shape` or `bias` has another shape.
    PyTorch: `torch.nn.LayerNorm(normalized_shape, eps)`.
    """
    fn = "layer_norm"
    x = _input(fn, x)
    eps = _eps(fn, eps)
    if not isinstance(params, Mapping) or "scale" not in params:
        raise ValueError(f"{fn}: params must be a dict with keys ['scale', 'bias'], got "
                         f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}.")
    shape = tuple(jnp.shape(params["scale"]))
    k = len(shape)
    if k == 0 or x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"{fn}: x of shape {tuple(x.shape)} must end with the normalized shape "
                         f"{shape} = params['scale'].shape.")
    _check_params(fn, params, ("scale", "bias"), shape, "params['scale'] has shape")
    x32 = x.astype(_stats_dtype(x.dtype))
    mean, var, _ = masked_moments(x32, tuple(range(x.ndim - k, x.ndim)))
    return _affine((x32 - mean) * jax.lax.rsqrt(var + eps), params, shape, x.dtype)


def init_group_norm(num_channels: int, dtype=jnp.float32) -> dict:
    """`{"scale": ones [C], "bias": zeros [C]}` (PyTorch's GroupNorm defaults)."""
    c = check_positive_int("init_group_norm", "num_channels", num_channels)
    return {"scale": jnp.ones((c,), dtype), "bias": jnp.zeros((c,), dtype)}


def group_norm(x: jax.Array, params: Mapping, *, groups: int, eps: float = 1e-5,
               layout: str = "NHWC") -> jax.Array:
    """Group normalisation: per example, statistics over each group of `C / groups` channels and space.

    The channels are split into `groups` groups of consecutive channels; each (example, group) is
    normalised with its own mean and biased variance, then `y = xhat * scale[c] + bias[c]` per channel.
    `groups=1` normalises each example over all of (C, spatial); `groups=C` is instance norm.

    Args:
      x: `[N, C]`, or `[N, *spatial, C]` (default layout) / `[N, C, *spatial]` (`layout="NCHW"` etc.),
        1 to 3 spatial dims.
      params: `{"scale": [C], "bias": [C]}`.
      groups: positive int dividing C.
      eps: added to the variance.
      layout: where the channels are; the rank comes from `x`.
    Returns: an array with the shape and dtype of `x`; statistics in float32 or wider.
    Raises: TypeError if `x` is not floating or `groups` not an int; ValueError: wrong rank, unknown
      layout, `groups` not positive or not dividing C, `params` not `[C]`.
    PyTorch: `torch.nn.GroupNorm(groups, C, eps)`.
    """
    fn = "group_norm"
    x = _input(fn, x)
    eps = _eps(fn, eps)
    channel_axis, _ = _norm_layout(fn, x, layout, allow_nc=True)
    c = x.shape[channel_axis]
    groups = check_positive_int(fn, "groups", groups)
    if c % groups:
        raise ValueError(f"{fn}: groups={groups} must divide the number of channels C={c} "
                         f"(x of shape {tuple(x.shape)}, layout={layout!r}).")
    _check_params(fn, params, ("scale", "bias"), (c,), f"x of shape {tuple(x.shape)} has C =")
    x32 = x.astype(_stats_dtype(x.dtype))
    # Split the channel axis into (groups, C / groups); reduce over everything but N and the group axis.
    split = x.shape[:channel_axis] + (groups, c // groups) + x.shape[channel_axis + 1:]
    xg = x32.reshape(split)
    axes = tuple(a for a in range(1, xg.ndim) if a != channel_axis)
    mean, var, _ = masked_moments(xg, axes)
    xhat = ((xg - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)
    return _affine(xhat, params, _channel_shape(x.ndim, channel_axis, c), x.dtype)


def init_instance_norm(num_channels: int, dtype=jnp.float32) -> dict:
    """`{"scale": ones [C], "bias": zeros [C]}` (PyTorch's InstanceNorm with `affine=True`)."""
    c = check_positive_int("init_instance_norm", "num_channels", num_channels)
    return {"scale": jnp.ones((c,), dtype), "bias": jnp.zeros((c,), dtype)}


def instance_norm(x: jax.Array, params: Mapping, *, eps: float = 1e-5, layout: str = "NHWC") -> jax.Array:
    """Instance normalisation: per example and channel, statistics over the spatial axes.

    `y = (x - mean[n, c]) / sqrt(var[n, c] + eps) * scale[c] + bias[c]`, biased variance; no running
    statistics (the same in training and evaluation).

    Args:
      x: `[N, *spatial, C]` (default layout) or `[N, C, *spatial]` (`layout="NCHW"` etc.), 1 to 3
        spatial dims.
      params: `{"scale": [C], "bias": [C]}`.
      eps: added to the variance.
      layout: where the channels are; the rank comes from `x`.
    Returns: an array with the shape and dtype of `x`; statistics in float32 or wider.
    Raises: TypeError if `x` is not floating; ValueError: wrong rank, unknown layout, `params` not `[C]`.
    PyTorch: `torch.nn.InstanceNorm1d/2d/3d(C, eps, affine=True, track_running_stats=False)`.
    """
    fn = "instance_norm"
    x = _input(fn, x)
    eps = _eps(fn, eps)
    channel_axis, spatial_axes = _norm_layout(fn, x, layout, allow_nc=False)
    c = x.shape[channel_axis]
    _check_params(fn, params, ("scale", "bias"), (c,), f"x of shape {tuple(x.shape)} has C =")
    x32 = x.astype(_stats_dtype(x.dtype))
    mean, var, _ = masked_moments(x32, spatial_axes)
    return _affine((x32 - mean) * jax.lax.rsqrt(var + eps), params,
                   _channel_shape(x.ndim, channel_axis, c), x.dtype)
