"""Normalisation modules: Flax wrappers of `layers.batch_norm`, `layer_norm`, `group_norm`, `instance_norm`.

Default parameters and running state come from the `layers.init_*` functions, so a fresh module starts
exactly like a fresh PyTorch layer (scale 1, bias 0, running mean 0, running variance 1).
"""
from collections.abc import Callable

import flax.linen as nn
import jax

from jaxnets import init
from jaxnets.checks import is_channels_last
from jaxnets.layers.normalization import (batch_norm, group_norm, init_batch_norm, init_group_norm,
                                          init_instance_norm, init_layer_norm, instance_norm, layer_norm)

Initializer = Callable[..., jax.Array]


def _affine_params(module: nn.Module, initial: dict) -> dict:
    """The module's "scale" and "bias" parameters, initialised to `initial` (a `layers.init_*_norm` dict)."""
    return {name: module.param(name, lambda key, value=value: value) for name, value in initial.items()}


def _channels(fn: str, x: jax.Array, layout: str) -> int:
    """Channel count of `x`: the last axis for [N, C] and channels-last inputs, axis 1 otherwise."""
    channels_last = is_channels_last(fn, layout)
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected a batched input of shape [N, C] or "
                         f"{'[N, *spatial, C]' if channels_last else '[N, C, *spatial]'}, got shape {tuple(x.shape)}.")
    return x.shape[-1] if (channels_last or x.ndim == 2) else x.shape[1]


class BatchNorm(nn.Module):
    """Batch normalisation; calls `layers.batch_norm`. Running statistics live in "batch_stats".

    `y = (x - mean) / sqrt(var + eps) * scale + bias` with batch statistics when `train=True`, running
    statistics when `train=False`; in training the running statistics are updated as
    `new = (1 - momentum) * old + momentum * batch` (unbiased batch variance), PyTorch's convention.

    Attributes:
      momentum: weight of the NEW batch in the running update (PyTorch's; Flax's is `1 - momentum`).
      eps: added to the variance.
      axis_name: mapped axis name(s) for synchronised statistics under `shard_map`/`pmap`/`vmap`.
      layout: where the channels are ("NHWC" default; "NCHW" for PyTorch-shaped arrays); `[N, C]` inputs
        (BatchNorm1d) are accepted with either.
      scale_init, bias_init: initializers of "scale" and "bias" (`init.ones`, `init.zeros`; pass
        `init.zeros` as `scale_init` for a residual branch that starts at zero).

    Parameters: "scale", "bias" `[C]`. Collection "batch_stats": "mean", "var" `[C]` (zeros, ones).

    `__call__(x, *, train, mask=None)`:
      train: required. True: normalise with the batch statistics and update "batch_stats", which must
        then be mutable (`apply(..., mutable=["batch_stats"])`); during `init` the statistics are left at
        their initial values. False: normalise with the running statistics; nothing is mutated.
      mask: optional `[N]` bool of valid rows, passed to `layers.batch_norm` (excluded from the statistics).
      Returns `y` with the shape of `x`.

    Raises: ValueError for an input of rank < 2, or `train=True` outside `init` with "batch_stats"
      immutable; everything `layers.batch_norm` rejects.

    PyTorch: `torch.nn.BatchNorm1d/2d/3d(C, eps=eps, momentum=momentum)`; with `axis_name`,
    `torch.nn.SyncBatchNorm`.
    """

    momentum: float = 0.1
    eps: float = 1e-5
    axis_name: str | tuple[str, ...] | None = None
    layout: str = "NHWC"
    scale_init: Initializer = init.ones
    bias_init: Initializer = init.zeros

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        c = _channels("BatchNorm", x, self.layout)
        params = {"scale": self.param("scale", self.scale_init, (c,)),
                  "bias": self.param("bias", self.bias_init, (c,))}
        mean = self.variable("batch_stats", "mean", lambda: init_batch_norm(c)[1]["mean"])
        var = self.variable("batch_stats", "var", lambda: init_batch_norm(c)[1]["var"])
        y, new = batch_norm(x, params, {"mean": mean.value, "var": var.value}, train=train,
                            momentum=self.momentum, eps=self.eps, axis_name=self.axis_name, mask=mask,
                            layout=self.layout)
        if train and not self.is_initializing():
            if not self.is_mutable_collection("batch_stats"):
                raise ValueError("BatchNorm: train=True updates the running statistics, but the 'batch_stats' "
                                 "collection is immutable; call model.apply(variables, x, train=True, "
                                 "mutable=['batch_stats']) (or use train=False).")
            mean.value, var.value = new["mean"], new["var"]
        return y


class LayerNorm(nn.Module):
    """Layer normalisation over the LAST axis; calls `layers.layer_norm`.

    `y = (x - mean) / sqrt(var + eps) * scale + bias`, statistics per example over the last axis.
    Parameters: "scale", "bias" `[D]` (ones, zeros from `layers.init_layer_norm`).
    `__call__(x)`: `[..., D]` -> `[..., D]`.
    PyTorch: `torch.nn.LayerNorm(D, eps=eps)`.
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim < 1:
            raise ValueError(f"LayerNorm: expected an input of shape [..., D], got a scalar of shape {tuple(x.shape)}.")
        d = x.shape[-1]
        params = _affine_params(self, init_layer_norm(d))
        return layer_norm(x, params, eps=self.eps)


class GroupNorm(nn.Module):
    """Group normalisation; calls `layers.group_norm`.

    Statistics per example over the spatial axes and each group of `C / groups` channels.
    Parameters: "scale", "bias" `[C]` (ones, zeros from `layers.init_group_norm`).
    `__call__(x)`: `[N, *spatial, C]` (or `[N, C, *spatial]` with `layout="NCHW"`) -> same shape.
    PyTorch: `torch.nn.GroupNorm(groups, C, eps=eps)`.
    """

    groups: int
    eps: float = 1e-5
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = _channels("GroupNorm", x, self.layout)
        params = _affine_params(self, init_group_norm(c))
        return group_norm(x, params, groups=self.groups, eps=self.eps, layout=self.layout)


class InstanceNorm(nn.Module):
    """Instance normalisation (per example and channel, over the spatial axes); calls `layers.instance_norm`.

    Parameters: "scale", "bias" `[C]` (ones, zeros from `layers.init_instance_norm`).
    `__call__(x)`: `[N, *spatial, C]` (or `[N, C, *spatial]` with `layout="NCHW"`) -> same shape.
    PyTorch: `torch.nn.InstanceNorm2d(C, eps=eps, affine=True)` (no running statistics).
    """

    eps: float = 1e-5
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = _channels("InstanceNorm", x, self.layout)
        params = _affine_params(self, init_instance_norm(c))
        return instance_norm(x, params, eps=self.eps, layout=self.layout)
