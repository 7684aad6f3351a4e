"""Pooling modules: Flax wrappers (no parameters) of the functions in `layers.pooling`."""
from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxnets.layers.pooling import adaptive_avg_pool, avg_pool, global_avg_pool, max_pool


class MaxPool(nn.Module):
    """Max pooling; calls `layers.max_pool`.

    Attributes: `window`, `stride` (None: `window`), `padding` (-inf, at most `window // 2`), `ceil_mode`
      (PyTorch's rounding up of the output size), `layout` ("NHWC" default or "NCHW").
    `__call__(x)`: `[N, *spatial, C]` -> `[N, *out_spatial, C]`, sizes from `layers.conv_output_size`.
    PyTorch: `torch.nn.MaxPool1d/2d/3d(window, stride, padding, ceil_mode=ceil_mode)`.
    """

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: int | Sequence[int] = 0
    ceil_mode: bool = False
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return max_pool(x, self.window, stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                        layout=self.layout)


class AvgPool(nn.Module):
    """Average pooling; calls `layers.avg_pool`.

    Attributes as `MaxPool`, plus `count_include_pad` (divide by the full window, zeros included, as
      PyTorch's default, or by the number of real elements).
    `__call__(x)`: `[N, *spatial, C]` -> `[N, *out_spatial, C]`.
    PyTorch: `torch.nn.AvgPool1d/2d/3d(window, stride, padding, ceil_mode, count_include_pad)`.
    """

    window: int | Sequence[int]
    stride: int | Sequence[int] | None = None
    padding: int | Sequence[int] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return avg_pool(x, self.window, stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode,
                        count_include_pad=self.count_include_pad, layout=self.layout)


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes; calls `layers.global_avg_pool`.

    `__call__(x)`: `[N, *spatial, C]` -> `[N, C]` (or `[N, 1, ..., 1, C]` with `keepdims=True`).
    PyTorch: `torch.nn.AdaptiveAvgPool2d(1)` followed by `torch.flatten(x, 1)` (keepdims=False).
    """

    layout: str = "NHWC"
    keepdims: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return global_avg_pool(x, layout=self.layout, keepdims=self.keepdims)


class AdaptiveAvgPool(nn.Module):
    """Average pooling to a fixed output size (PyTorch's bins); calls `layers.adaptive_avg_pool`.

    `__call__(x)`: `[N, *spatial, C]` -> `[N, *output_size, C]`.
    PyTorch: `torch.nn.AdaptiveAvgPool1d/2d/3d(output_size)`.
    """

    output_size: int | Sequence[int]
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return adaptive_avg_pool(x, self.output_size, layout=self.layout)
