"""Fan computation and PyTorch's gain table: the two numbers every variance-scaling initializer needs.

Kernel layouts (the family is named by `kernel_layout`; the rank of the shape picks the member):
- channels-last, this library's default: `"IO"` (dense `[in, out]`), `"WIO"`, `"HWIO"`, `"DHWIO"`;
- channels-first, PyTorch's: `"OI"` (`torch.nn.Linear.weight`), `"OIW"`, `"OIHW"`, `"OIDHW"`.
So `kernel_layout="HWIO"` on a 2-D shape means `IO`, and `kernel_layout="OIHW"` on a 2-D shape means `OI`.
The names and their check live in `jaxnets.checks` (`KERNELS_LAST`, `KERNELS_FIRST`, `kernel_is_channels_last`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from jaxnets.checks import (KERNELS_FIRST, KERNELS_LAST, check_choice, check_real, check_shape,  # noqa: F401
                            kernel_is_channels_last, renamed_keyword)

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
NONLINEARITIES = _LINEAR + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")


def fans(fn: str, shape, kernel_layout: str) -> tuple[int, int]:
    """`compute_fans` with the name of the calling function `fn` in its error messages."""
    channels_last = kernel_is_channels_last(fn, kernel_layout)
    shape = check_shape(fn, shape)
    if len(shape) < 2:
        raise ValueError(f"{fn}: fan in and fan out can not be computed for tensor with fewer than 2 dimensions, "
                         f"got shape {shape}. Biases have no fans: use zeros or pytorch_default_bias(fan_in).")
    if channels_last:  # [*spatial, in, out]
        receptive, fan_in, fan_out = math.prod(shape[:-2]), shape[-2], shape[-1]
    else:  # [out, in, *spatial]
        receptive, fan_in, fan_out = math.prod(shape[2:]), shape[1], shape[0]
    return fan_in * receptive, fan_out * receptive


def compute_fans(shape: Sequence[int], *, kernel_layout: str = "HWIO", layout: str | None = None
                 ) -> tuple[int, int]:
    """Fan-in and fan-out of a dense or convolution kernel.

    `fan_in = I * receptive_field` and `fan_out = O * receptive_field`, with `receptive_field` the
    product of the spatial sizes (1 for a dense kernel). For a grouped conv the kernel stores
    `I = C_in / groups` input channels, so `fan_in` is per group while `fan_out = C_out * receptive`:
    exactly PyTorch's rule.

    Args:
      shape: kernel shape of rank >= 2: `[I, O]`, `[*spatial, I, O]` (`kernel_layout` in the `HWIO`
        family, the default) or `[O, I]`, `[O, I, *spatial]` (`OIHW` family, PyTorch's).
      kernel_layout: any name of the family; the rank of `shape` picks the member.
      layout: deprecated name of `kernel_layout` (a DeprecationWarning; removed in the next release).
    Returns: `(fan_in, fan_out)` as Python ints.
    Raises: ValueError for a shape of rank < 2 (a bias has no fans), a negative size or an unknown
      kernel layout; TypeError for a shape that is not a tuple of ints or a kernel layout that is not a string.
    PyTorch: `torch.nn.init._calculate_fan_in_and_fan_out(weight)` for `kernel_layout="OIHW"`.
    """
    fn = "compute_fans"
    return fans(fn, shape, renamed_keyword(fn, "layout", layout, "kernel_layout", kernel_layout))


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for a nonlinearity: the std multiplier of Xavier/He initialisation.

    | nonlinearity                             | gain                      |
    |------------------------------------------|---------------------------|
    | linear, conv{1,2,3}d, conv_transpose*d   | 1                         |
    | sigmoid                                  | 1                         |
    | tanh                                     | 5/3                       |
    | relu                                     | sqrt(2)                   |
    | leaky_relu (`param` = slope, 0.01)       | sqrt(2 / (1 + slope^2))   |
    | selu                                     | 3/4                       |

    Args:
      nonlinearity: one of the names above (PyTorch's `nn.functional` names).
      param: the negative slope of `leaky_relu` (default 0.01); ignored by the others.
    Returns: the gain as a float.
    Raises: ValueError for an unknown nonlinearity or a non-finite slope; TypeError for a nonlinearity that
      is not a string or a leaky_relu slope that is not a real number.
    PyTorch: `torch.nn.init.calculate_gain`.
    """
    fn = "calculate_gain"
    check_choice(fn, "nonlinearity", nonlinearity, NONLINEARITIES)
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else check_real(fn, "param (the leaky_relu negative slope)", param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    return 3.0 / 4  # selu: PyTorch's empirical value (pytorch/pytorch#50664)
