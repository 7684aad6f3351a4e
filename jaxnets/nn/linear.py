"""`Conv` and `Dense`: Flax wrappers of `layers.conv` and `layers.linear`.

Both own a `kernel` and (optionally) a `bias` and are initialised exactly like PyTorch's
`nn.ConvNd`/`nn.Linear` unless told otherwise: `kernel_init=None` means
`init.pytorch_default` (kaiming_uniform with a = sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))) and
`bias_init=None` means `init.pytorch_default_bias(fan_in)` (the same bound).
"""
from collections.abc import Callable, Sequence
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets import init
from jaxnets.checks import (KERNELS_FIRST, KERNELS_LAST, as_tuple, check_array, check_int, check_positive_int,
                            is_channels_last)
from jaxnets.layers.conv import Padding, conv, linear

Initializer = Callable[..., jax.Array]


class Conv(nn.Module):
    """N-D convolution layer (1D/2D/3D from the input rank); calls `layers.conv`.

    Attributes:
      features: number of output channels `C_out`.
      kernel_size: int or one int per spatial dim.
      stride, padding, dilation, groups: as in `layers.conv` (padding: int, per-dim ints or
        `(low, high)` pairs, "SAME" or "VALID").
      use_bias: add a learned `[C_out]` bias (set False for a conv that feeds a BatchNorm).
      kernel_init: `init(key, shape, dtype)`; None -> `init.pytorch_default(kernel_layout=<kernel layout>)`.
      bias_init: `init(key, shape, dtype)`; None -> `init.pytorch_default_bias(fan_in)` with
        `fan_in = C_in / groups * prod(kernel_size)`.
      layout: activation layout, "NHWC" (default, any channels-last name) or "NCHW" (any channels-first
        name); the rank comes from the input.

    Parameters: "kernel" `[*kernel_size, C_in / groups, C_out]` (HWIO) for channels-last,
    `[C_out, C_in / groups, *kernel_size]` (OIHW, PyTorch's weight) for channels-first; "bias" `[C_out]`.

    `__call__(x)`: x `[N, *spatial, C_in]` (or `[N, C_in, *spatial]`) -> `[N, *out_spatial, C_out]`.

    Raises: ValueError for a non-positive `features` or `groups`, a `kernel_size` of the wrong length,
      `groups` not dividing the input channels, and everything `layers.conv` rejects; TypeError for a
      non-int `features`, `kernel_size` or `groups` (a bool included) and a non-string layout.

    PyTorch: `torch.nn.Conv1d/Conv2d/Conv3d(C_in, features, kernel_size, stride, padding, dilation, groups,
    bias=use_bias)` (with `layout="NCHW"` it takes the same weight array unchanged).
    """

    features: int
    kernel_size: int | Sequence[int]
    stride: int | Sequence[int] = 1
    padding: Padding = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    use_bias: bool = True
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None
    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = "Conv"
        features = check_positive_int(fn, "features", self.features)
        channels_last = is_channels_last(fn, self.layout)
        x = jnp.asarray(check_array(fn, "x", x))
        spatial = x.ndim - 2
        if spatial not in (1, 2, 3):
            raise ValueError(f"{fn}: expected a batched input of rank 3, 4 or 5 "
                             f"({'[N, *spatial, C]' if channels_last else '[N, C, *spatial]'}), "
                             f"got shape {tuple(x.shape)}.")
        kernel_size = as_tuple(fn, "kernel_size", self.kernel_size, spatial)
        c_in = x.shape[-1] if channels_last else x.shape[1]
        groups = check_int(fn, "groups", self.groups, minimum=1)
        if c_in % groups:
            raise ValueError(f"{fn}: groups={groups} does not divide the {c_in} input channels of x "
                             f"(shape {tuple(x.shape)}, layout {self.layout!r}).")
        # The kernel layout follows the activation layout: HWIO family for channels-last, OIHW for first.
        if channels_last:
            shape = (*kernel_size, c_in // groups, features)
            kernel_layout = KERNELS_LAST[spatial]
        else:
            shape = (features, c_in // groups, *kernel_size)
            kernel_layout = KERNELS_FIRST[spatial]
        kernel_init = self.kernel_init or init.pytorch_default(kernel_layout=kernel_layout)
        kernel = self.param("kernel", kernel_init, shape)
        bias = None
        if self.use_bias:
            fan_in, _ = init.compute_fans(shape, kernel_layout=kernel_layout)
            bias_init = self.bias_init or init.pytorch_default_bias(fan_in)
            bias = self.param("bias", bias_init, (features,))
        return conv(x, kernel, bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=groups, layout=self.layout)


class Dense(nn.Module):
    """Fully connected layer `y = x @ kernel + bias` on the last axis; calls `layers.linear`.

    Attributes:
      features: output size.
      use_bias: add a learned `[features]` bias (False for a linear layer that feeds a BatchNorm).
      kernel_init: None -> `init.pytorch_default()` (torch's `nn.Linear` weight init).
      bias_init: None -> `init.pytorch_default_bias(in_features)` (torch's `nn.Linear` bias init).

    Parameters: "kernel" `[in, features]` (the TRANSPOSE of a PyTorch Linear weight), "bias" `[features]`.

    `__call__(x)`: `[..., in]` -> `[..., features]`.

    Raises: ValueError for a non-positive `features` or a scalar input; TypeError for a non-int `features`
      (a bool included) or a non-array input.

    PyTorch: `torch.nn.Linear(in, features, bias=use_bias)`.
    """

    features: int
    use_bias: bool = True
    kernel_init: Initializer | None = None
    bias_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = "Dense"
        features = check_positive_int(fn, "features", self.features)
        x = jnp.asarray(check_array(fn, "x", x))
        if x.ndim < 1:
            raise ValueError(f"{fn}: expected an input of shape [..., in], got a scalar of shape {tuple(x.shape)}.")
        shape = (x.shape[-1], features)
        kernel = self.param("kernel", self.kernel_init or init.pytorch_default(kernel_layout="IO"), shape)
        bias = None
        if self.use_bias:
            fan_in, _ = init.compute_fans(shape, kernel_layout="IO")
            bias = self.param("bias", self.bias_init or init.pytorch_default_bias(fan_in), (features,))
        return linear(x, kernel, bias)
