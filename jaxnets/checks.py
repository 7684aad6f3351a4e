"""Argument checks shared by every package: one home for each rule, one error rule.

The rule: a value of the wrong TYPE raises `TypeError`; a value of the right type but outside what is
allowed raises `ValueError`. Every message names the function, the argument, what was expected and
what arrived, in one f-string. `bool` is never accepted where an `int` or a real number is meant.
Shapes are static under `jit`, so these checks run once at trace time and cost nothing.

Layouts:

Every spatial function takes `layout`: a channels-last name (`"NWC"`, `"NHWC"`, `"NDHWC"`,
the default family) or a channels-first name (`"NCW"`, `"NCHW"`, `"NCDHW"`, PyTorch's). The
rank (1D/2D/3D) is always taken from the input, so `layout` only says where the channels are:
`layout="NCHW"` on a 3-D input means `NCW`. Kernels follow the activations: `WIO`/`HWIO`/
`DHWIO` for channels-last, `OIW`/`OIHW`/`OIDHW` (PyTorch's) for channels-first.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

CHANNELS_LAST = ("NWC", "NHWC", "NDHWC")
CHANNELS_FIRST = ("NCW", "NCHW", "NCDHW")


class Layout(NamedTuple):
    """Where the axes of an activation of rank `spatial + 2` are."""

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
    """Validate an activation layout name and say whether it is channels-last."""
    return _layout_family(fn, "layout", layout, CHANNELS_LAST, CHANNELS_FIRST, ("NHWC", "NCHW"),
                          "(channels-last is the default)")


def _layout_family(fn: str, name: str, layout, last: tuple[str, ...], first: tuple[str, ...],
                   examples: tuple[str, str], note: str) -> bool:
    """True for a name in `last`, False for one in `first`; TypeError for a non-string, else ValueError."""
    if not isinstance(layout, str):
        raise TypeError(f"{fn}: {name} must be a string such as {examples[0]!r} or {examples[1]!r}, got "
                        f"{type(layout).__name__}.")
    if layout in last or layout in first:
        return layout in last
    raise ValueError(f"{fn}: unknown {name} {layout!r}; expected one of {last + first} {note}.")


def spatial_layout(fn: str, x, layout: str, *, ranks: Sequence[int] = (1, 2, 3)) -> Layout:
    """Check that `x` is a batched spatial array and return its layout; rank is taken from `x`."""
    channels_last = is_channels_last(fn, layout)
    spatial = x.ndim - 2
    if spatial not in ranks:
        allowed = ", ".join(f"{r + 2}-D" for r in ranks)
        raise ValueError(f"{fn}: expected a batched input of rank {allowed} "
                         f"({'N, *spatial, C' if channels_last else 'N, C, *spatial'}), got shape {tuple(x.shape)}.")
    return Layout(channels_last, spatial)


def as_tuple(fn: str, name: str, value, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """Expand an int or a length-`n` sequence of ints into a tuple of `n` ints >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)):
        raise TypeError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{fn}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    if any(v < minimum for v in values):
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value!r}.")
    return values


def check_bool(fn: str, name: str, value) -> bool:
    """Check a static flag such as `train`: a Python (or numpy) bool, never a traced array or an int."""
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

    Written out rather than `jnp.promote_types` so it also works under strict dtype promotion.
    """
    import jax.numpy as jnp

    return jnp.dtype(jnp.float32) if jnp.finfo(dtype).bits < 32 else jnp.dtype(dtype)


# ------------------------------------------------------------------------------------------------
# Kernel layouts (initializers, fold_batch_norm, nn.Conv): the argument is named `kernel_layout`.
# ------------------------------------------------------------------------------------------------
KERNELS_LAST = ("IO", "WIO", "HWIO", "DHWIO")
KERNELS_FIRST = ("OI", "OIW", "OIHW", "OIDHW")


def kernel_is_channels_last(fn: str, layout: str, *, name: str = "kernel_layout") -> bool:
    """Validate a kernel layout name; True for the `HWIO` family, False for `OIHW` (PyTorch's)."""
    return _layout_family(fn, name, layout, KERNELS_LAST, KERNELS_FIRST, ("HWIO", "OIHW"),
                          "('HWIO' family is the default, 'OIHW' family is PyTorch's)")


# ------------------------------------------------------------------------------------------------
# Scalars: ints, reals, choices
# ------------------------------------------------------------------------------------------------
def is_int(value) -> bool:
    """A Python or numpy integer, and not a bool."""
    import numbers

    import numpy as np

    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A Python or numpy real number (int or float), and not a bool."""
    import numbers

    import numpy as np

    return (isinstance(value, (numbers.Real, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def check_int(fn: str, name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool) in `[minimum, maximum]`: TypeError for another type, ValueError out of range."""
    bounds = _bounds_text(minimum, maximum)
    if not is_int(value):
        raise TypeError(f"{fn}: {name} must be an int{bounds}, got {type(value).__name__} {value!r}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{fn}: {name} must be an int{bounds}, got {value}.")
    return value


def check_positive_int(fn: str, name: str, value) -> int:
    """An int >= 1 (a size, a count, a stride)."""
    return check_int(fn, name, value, minimum=1)


def check_real(fn: str, name: str, value, *, minimum: float | None = None, maximum: float | None = None,
               min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """A finite real number (not a bool) within the bounds: TypeError for another type, ValueError for
    nan/inf or a value out of range. Returns it as a Python float."""
    import math

    bounds = _bounds_text(minimum, maximum, min_inclusive, max_inclusive)
    if not is_real(value):
        raise TypeError(f"{fn}: {name} must be a real number{bounds}, got {type(value).__name__} {value!r}.")
    value = float(value)
    below = minimum is not None and (value < minimum if min_inclusive else value <= minimum)
    above = maximum is not None and (value > maximum if max_inclusive else value >= maximum)
    if not math.isfinite(value) or below or above:
        raise ValueError(f"{fn}: {name} must be a finite real number{bounds}, got {value}.")
    return value


def check_choice(fn: str, name: str, value, choices) -> str:
    """One of the strings `choices`: TypeError for a non-string, ValueError for an unknown name."""
    if not isinstance(value, str):
        raise TypeError(f"{fn}: {name} must be a string, one of {tuple(choices)}, got {type(value).__name__} "
                        f"{value!r}.")
    if value not in choices:
        raise ValueError(f"{fn}: unknown {name} {value!r}; expected one of {tuple(choices)}.")
    return value


def _bounds_text(minimum, maximum, min_inclusive: bool = True, max_inclusive: bool = True) -> str:
    if minimum is not None and maximum is not None:
        return f" in {'[' if min_inclusive else '('}{minimum}, {maximum}{']' if max_inclusive else ')'}"
    if minimum is not None:
        return f" {'>=' if min_inclusive else '>'} {minimum}"
    if maximum is not None:
        return f" {'<=' if max_inclusive else '<'} {maximum}"
    return ""


# ------------------------------------------------------------------------------------------------
# Arrays and PRNG keys
# ------------------------------------------------------------------------------------------------
def check_array(fn: str, name: str, x):
    """`x` as an array (a jax/numpy array, a tracer, or a Python/numpy number or nested list of
    numbers): TypeError naming the function for anything else (a str, None, a dict, an object array)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return x
    if isinstance(x, (np.ndarray, np.generic)):
        if x.dtype.kind not in "biufc" and not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{fn}: {name} must be a numeric array, got a numpy array of dtype {x.dtype}.")
        return x
    if isinstance(x, (bool, int, float, list, tuple)):
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.dtype.kind in "biuf":
            return jnp.asarray(x)
    raise TypeError(f"{fn}: {name} must be an array (jax.Array or numpy.ndarray), got {type(x).__name__}.")


def check_key(fn: str, key, *, name: str = "key"):
    """A single PRNG key: a typed key (`jax.random.key`) of shape (), or a legacy raw key
    (`jax.random.PRNGKey`: uint32 of shape (2,)). TypeError for anything else (an int, None, a float
    array); ValueError for a batch of keys (pass one key, or `jax.vmap` over a batch)."""
    import jax
    import jax.numpy as jnp

    if isinstance(key, (jax.Array, jax.core.Tracer)) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{fn}: {name} must be a single PRNG key, got a batch of keys of shape {key.shape}; "
                             f"split it and pass one key (or jax.vmap over the batch).")
        return key
    if isinstance(key, (jax.Array, jax.core.Tracer)) and key.dtype == jnp.uint32:
        if key.shape != (2,):
            raise ValueError(f"{fn}: {name} must be a single PRNG key (a raw key has shape (2,)), got a uint32 "
                             f"array of shape {key.shape}; pass one key (or jax.vmap over a batch).")
        return key
    got = type(key).__name__ if not hasattr(key, "dtype") else f"{type(key).__name__} of dtype {key.dtype}"
    raise TypeError(f"{fn}: {name} must be a PRNG key from jax.random.key(seed), got {got}.")


# ------------------------------------------------------------------------------------------------
# Inputs fed in the other layout
# ------------------------------------------------------------------------------------------------
def check_input_layout(fn: str, name: str, shape, expected, *, layout: str | None = None) -> None:
    """Raise one clear ValueError when a batch looks like the other layout of the input a model expects.

    Args:
      fn, name: the function and the argument, for the message (e.g. "fit", "batch['image']").
      shape: the batch's shape `[N, ...]`.
      expected: the shape of ONE input without the batch axis, the one the model was initialised for,
        e.g. `(32, 32, 3)` (NHWC) or `(3, 32, 32)` (NCHW).
      layout: the model's activation layout if known ("NHWC" family or "NCHW" family). With it, a batch
        whose channel axis is in the other place is caught whatever its image size; without it, only a
        batch whose per-example shape is exactly `expected` with the channel axis moved (last <-> first).
    Raises: ValueError naming both layouts and the fix (`jnp.moveaxis`) when the batch is channels-first
      for a channels-last model or the reverse. A batch that is merely another size is left to the model
      (a fully convolutional model may take it); an unknown `layout` raises like `is_channels_last`.
    """
    per, expected = tuple(shape)[1:], tuple(expected)
    if len(per) != len(expected) or len(per) < 2 or per == expected:
        return
    if layout is None:
        fed_first = per == expected[-1:] + expected[:-1]   # [C, H, W] for a model built on [H, W, C]
        fed_last = per == expected[1:] + expected[:1]      # [H, W, C] for a model built on [C, H, W]
    else:
        model_last = is_channels_last(fn, layout)
        channels = expected[-1] if model_last else expected[0]
        fed_first = model_last and per[0] == channels != per[-1]
        fed_last = not model_last and per[-1] == channels != per[0]
    if not (fed_first or fed_last):
        return
    spatial = len(per) - 1
    last = CHANNELS_LAST[spatial - 1] if spatial <= 3 else "channels-last"
    first = CHANNELS_FIRST[spatial - 1] if spatial <= 3 else "channels-first"
    got, want = (first, last) if fed_first else (last, first)
    move = "jnp.moveaxis(x, 1, -1)" if fed_first else "jnp.moveaxis(x, -1, 1)"
    raise ValueError(f"{fn}: {name} of shape {tuple(shape)} looks like {got} but the model was initialised for "
                     f"{want} inputs [N, {', '.join(map(str, expected))}]; convert the batch with {move} (or build the "
                     f"model with layout={got!r}).")


def concrete_or_none(value):
    """`value` as a numpy array when it is known at trace time, else None (a tracer inside `jit`).

    For checks on values that are usually concrete (weights, probabilities) but may be traced.
    """
    import jax
    import numpy as np

    try:
        return np.asarray(value)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_real_or_array(fn: str, name: str, value, *, minimum: float | None = None,
                        maximum: float | None = None, min_inclusive: bool = True, max_inclusive: bool = True):
    """A hyperparameter that may be traced: a real number (checked as `check_real`, returned as a Python
    float) or a real-valued jax/numpy array of any shape, e.g. a tracer under `jax.vmap` over a population
    (returned as is). TypeError for another type or a non-real dtype; a concrete array (not a tracer) is
    also checked for nan/inf and the bounds (ValueError); a tracer's values cannot be checked."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if not isinstance(value, (jax.Array, jax.core.Tracer, np.ndarray)):
        return check_real(fn, name, value, minimum=minimum, maximum=maximum, min_inclusive=min_inclusive,
                          max_inclusive=max_inclusive)
    bounds = _bounds_text(minimum, maximum, min_inclusive, max_inclusive)
    if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
        raise TypeError(f"{fn}: {name} must be a real number{bounds} or a real array, got an array of dtype "
                        f"{value.dtype}.")
    if isinstance(value, jax.core.Tracer):
        return value
    v = np.asarray(value, np.float64)
    below = minimum is not None and np.any(v < minimum if min_inclusive else v <= minimum)
    above = maximum is not None and np.any(v > maximum if max_inclusive else v >= maximum)
    if not np.all(np.isfinite(v)) or below or above:
        raise ValueError(f"{fn}: {name} must be a finite real number{bounds} (every element of the array), "
                         f"got {v.tolist()}.")
    return value


# Shapes and deprecated argument names
# ------------------------------------------------------------------------------------------------
def check_shape(fn: str, shape, *, name: str = "shape") -> tuple[int, ...]:
    """`shape` as a tuple of non-negative Python ints (an int means a 1-D shape): TypeError for a value
    that is not an int or a sequence of ints (bools included), ValueError for a negative size."""
    from collections.abc import Sequence as _Sequence

    dims = (shape,) if is_int(shape) else shape
    if not isinstance(dims, _Sequence) or isinstance(dims, str) or not all(is_int(d) for d in dims):
        raise TypeError(f"{fn}: {name} must be a tuple of non-negative ints, got {type(shape).__name__} {shape!r}.")
    if any(d < 0 for d in dims):
        raise ValueError(f"{fn}: {name} must be a tuple of non-negative ints, got {tuple(dims)!r}.")
    return tuple(int(d) for d in dims)


def renamed_keyword(fn: str, old_name: str, old_value, new_name: str, new_value):
    """Resolve a keyword renamed from `old_name` to `new_name`: `old_value` (None when not passed)
    still works for one release, with a `DeprecationWarning` naming the new keyword, and wins."""
    import warnings

    if old_value is None:
        return new_value
    warnings.warn(f"{fn}: the keyword {old_name}= is deprecated and will be removed in the next release; "
                  f"pass {new_name}={old_value!r} instead.", DeprecationWarning, stacklevel=3)
    return old_value


def check_float_input(fn: str, name: str, x) -> None:
    """TypeError for an integer or bool array where float activations are expected (as torch's convolutions
    and linear layers raise for integer inputs): the usual cause is a uint8 image given to a model."""
    import jax.numpy as jnp

    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got dtype {x.dtype}. Models take float "
                        f"inputs: scale uint8 images to [0, 1] with jaxnets.data.to_float (x / 255, the "
                        f"preprocessing fit and evaluate apply) before model.apply.")
