"""Shared argument checks and layout handling for the pure layer functions.

Every spatial function takes ``layout``: a channels-last name (``"NWC"``, ``"NHWC"``, ``"NDHWC"``,
the default family) or a channels-first name (``"NCW"``, ``"NCHW"``, ``"NCDHW"``, PyTorch's). The
rank (1D/2D/3D) is always taken from the input, so ``layout`` only says where the channels are:
``layout="NCHW"`` on a 3-D input means ``NCW``. Kernels follow the activations: ``WIO``/``HWIO``/
``DHWIO`` for channels-last, ``OIW``/``OIHW``/``OIDHW`` (PyTorch's) for channels-first.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

CHANNELS_LAST = ("NWC", "NHWC", "NDHWC")
CHANNELS_FIRST = ("NCW", "NCHW", "NCDHW")


class Layout(NamedTuple):
    """Where the axes of an activation of rank ``spatial + 2`` are."""

    channels_last: bool
    spatial: int  # number of spatial dimensions: 1, 2 or 3

    @property
    def channel_axis(self) -> int:
        return -1 if self.channels_last else 1

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = 1 if self.channels_last else 2
        return tuple(range(start, start + self.spatial))

    @property
    def name(self) -> str:
        return (CHANNELS_LAST if self.channels_last else CHANNELS_FIRST)[self.spatial - 1]


def is_channels_last(fn: str, layout: str) -> bool:
    """Validate a layout name and say whether it is channels-last."""
    if not isinstance(layout, str):
        raise TypeError(f"{fn}: layout must be a string such as 'NHWC' or 'NCHW', got {type(layout).__name__}.")
    if layout in CHANNELS_LAST:
        return True
    if layout in CHANNELS_FIRST:
        return False
    raise ValueError(f"{fn}: unknown layout {layout!r}; expected one of "
                     f"{CHANNELS_LAST + CHANNELS_FIRST} (channels-last is the default).")


def spatial_layout(fn: str, x, layout: str, *, ranks: Sequence[int] = (1, 2, 3)) -> Layout:
    """Check that ``x`` is a batched spatial array and return its layout; rank is taken from ``x``."""
    channels_last = is_channels_last(fn, layout)
    spatial = x.ndim - 2
    if spatial not in ranks:
        allowed = ", ".join(f"{r + 2}-D" for r in ranks)
        raise ValueError(f"{fn}: expected a batched input of rank {allowed} "
                         f"({'N, *spatial, C' if channels_last else 'N, C, *spatial'}), got shape {tuple(x.shape)}.")
    return Layout(channels_last, spatial)


def as_tuple(fn: str, name: str, value, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Expand an int or a length-``n`` sequence of ints into a tuple of ``n`` ints >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)):
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    if any(v < minimum for v in values):
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}.")
    return values


def check_bool(fn: str, name: str, value) -> bool:
    """Check a static flag such as ``train``: a Python (or numpy) bool, never a traced array or an int."""
    import numpy as np  # local import, like check_floating's

    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{fn}: {name} must be a Python bool (it picks the code path at trace time), "
                    f"got {type(value).__name__} {value!r}.")


def check_floating(fn: str, name: str, x) -> None:
    """Check that an array has a real floating dtype (bfloat16/float16/float32/float64)."""
    import jax.numpy as jnp  # local import; jnp.issubdtype also knows bfloat16 (numpy's does not)

    dtype = x.dtype if hasattr(x, "dtype") else jnp.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got dtype {dtype}; "
                        f"cast it first, e.g. x.astype(jnp.float32).")


def at_least_float32(dtype):
    """The dtype to accumulate in: float32 for bfloat16/float16, else `dtype` itself (float32, float64).

    Written out rather than ``jnp.promote_types`` so it also works under strict dtype promotion.
    """
    import jax.numpy as jnp

    return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)
