"""Fan computation and PyTorch's gain table: the two numbers every variance-scaling initializer needs.

Kernel layouts (the family is named by ``layout``; the rank of the shape picks the member):
- channels-last, this library's default: ``"IO"`` (dense ``[in, out]``), ``"WIO"``, ``"HWIO"``, ``"DHWIO"``;
- channels-first, PyTorch's: ``"OI"`` (``torch.nn.Linear.weight``), ``"OIW"``, ``"OIHW"``, ``"OIDHW"``.
So ``layout="HWIO"`` on a 2-D shape means ``IO``, and ``layout="OIHW"`` on a 2-D shape means ``OI``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

KERNELS_LAST = ("IO", "WIO", "HWIO", "DHWIO")
KERNELS_FIRST = ("OI", "OIW", "OIHW", "OIDHW")

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
NONLINEARITIES = _LINEAR + ("sigmoid", "tanh", "relu", "leaky_relu", "selu")


def kernel_is_channels_last(fn: str, layout: str) -> bool:
    """Validate a kernel layout name; True for the ``HWIO`` family, False for ``OIHW``."""
    if not isinstance(layout, str):
        raise TypeError(f"{fn}: layout must be a string such as 'HWIO' or 'OIHW', got {type(layout).__name__}.")
    if layout in KERNELS_LAST:
        return True
    if layout in KERNELS_FIRST:
        return False
    raise ValueError(f"{fn}: unknown kernel layout {layout!r}; expected one of {KERNELS_LAST + KERNELS_FIRST} "
                     f"('HWIO' family is the default, 'OIHW' family is PyTorch's).")


def check_shape(fn: str, shape) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of non-negative Python ints."""
    if isinstance(shape, (int, numbers.Integral)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise TypeError(f"{fn}: shape must be a tuple of non-negative ints, got {shape!r}.")
    return tuple(int(s) for s in shape)


def fans(fn: str, shape, layout: str) -> tuple[int, int]:
    """``compute_fans`` with the name of the calling function in its error messages."""
    channels_last = kernel_is_channels_last(fn, layout)
    shape = check_shape(fn, shape)
    if len(shape) < 2:
        raise ValueError(f"{fn}: fan in and fan out can not be computed for tensor with fewer than 2 dimensions, "
                         f"got shape {shape}. Biases have no fans: use zeros or pytorch_default_bias(fan_in).")
    if channels_last:  # [*spatial, in, out]
        receptive, fan_in, fan_out = math.prod(shape[:-2]), shape[-2], shape[-1]
    else:  # [out, in, *spatial]
        receptive, fan_in, fan_out = math.prod(shape[2:]), shape[1], shape[0]
    return fan_in * receptive, fan_out * receptive


def compute_fans(shape: Sequence[int], *, layout: str = "HWIO") -> tuple[int, int]:
    """Fan-in and fan-out of a dense or convolution kernel.

    ``fan_in = I * receptive_field`` and ``fan_out = O * receptive_field``, with ``receptive_field`` the
    product of the spatial sizes (1 for a dense kernel). For a grouped conv the kernel stores
    ``I = C_in / groups`` input channels, so ``fan_in`` is per group while ``fan_out = C_out * receptive``:
    exactly PyTorch's rule.

    Args:
      shape: kernel shape of rank >= 2: ``[I, O]``, ``[*spatial, I, O]`` (``layout`` in the ``HWIO``
        family, the default) or ``[O, I]``, ``[O, I, *spatial]`` (``OIHW`` family, PyTorch's).
      layout: any name of the family; the rank of ``shape`` picks the member.
    Returns: ``(fan_in, fan_out)`` as Python ints.
    Raises: ValueError for a shape of rank < 2 (a bias has no fans) or an unknown layout;
      TypeError for a shape that is not a tuple of ints.
    PyTorch: ``torch.nn.init._calculate_fan_in_and_fan_out(weight)`` for ``layout="OIHW"``.
    """
    return fans("compute_fans", shape, layout)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain for a nonlinearity: the std multiplier of Xavier/He initialisation.

    ========================================  ==================================
    nonlinearity                              gain
    ========================================  ==================================
    linear, conv{1,2,3}d, conv_transpose*d     1
    sigmoid                                    1
    tanh                                       5/3
    relu                                       sqrt(2)
    leaky_relu (``param`` = slope, 0.01)      sqrt(2 / (1 + slope^2))
    selu                                       3/4
    ========================================  ==================================

    Args:
      nonlinearity: one of the names above (PyTorch's ``nn.functional`` names).
      param: the negative slope of ``leaky_relu`` (default 0.01); ignored by the others.
    Returns: the gain as a float.
    Raises: ValueError for an unknown nonlinearity or a leaky_relu slope that is not a number.
    PyTorch: ``torch.nn.init.calculate_gain``.
    """
    fn = "calculate_gain"
    if not isinstance(nonlinearity, str):
        raise TypeError(f"{fn}: nonlinearity must be a string, one of {NONLINEARITIES}, got {nonlinearity!r}.")
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"{fn}: the leaky_relu negative slope (param) must be a number, got {param!r}.")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4  # PyTorch's empirical value (pytorch/pytorch#50664)
    raise ValueError(f"{fn}: unknown nonlinearity {nonlinearity!r}; expected one of {NONLINEARITIES}.")
