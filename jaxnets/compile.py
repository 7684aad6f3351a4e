"""`jaxnets.jit`: `jax.jit` with the compiler options jaxnets' own compiled programs use.

On CPU, XLA (jaxlib 0.10) runs convolutions through YNNPACK by default, several times slower for
convolutional networks than XLA's own; `default_compiler_options()` (also `jaxnets.train.default_compiler_options`)
turns that off per program. `fit`, `evaluate`, `tta_predict`, `ensemble_predict` and the runs of `jaxnets.train.load_run`
apply those options; `jaxnets.jit` gives the same to a user's own functions:

    predict = jaxnets.jit(lambda variables, x: model.apply(variables, x, train=False))
    logits = predict(variables, images)

It is `jax.jit` in every other respect: the same keyword arguments (`static_argnames`, `donate_argnums`,
`in_shardings`, ...), the same caching per input shapes and dtypes, and `.lower`, `.trace`,
`.eval_shape` on the result. Called inside another `jax.jit` (or `lax.scan`, ...), it is inlined into
that program, which JAX compiles with the outer options only.
"""
from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import SingleDeviceSharding

__all__ = ["jit", "Jitted", "CPU_COMPILER_OPTIONS", "default_compiler_options", "options_accepted"]

# XLA CPU (jaxlib 0.10) runs convolutions as YNNPACK library fusions by default; its own (Eigen) convolutions
# make the ResNet-18 training step several times faster (measured in benchmarks/README.md, "Speed work"). The value is XLA's default
# list {INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION, REDUCE} without INDIVIDUAL_CONVOLUTION: the compiled program is
# identical to the one under `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`,
# but set per program, so a library can apply it (XLA_FLAGS is read once per process).
_YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
CPU_COMPILER_OPTIONS = {_YNN_FUSION_OPTION: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def default_compiler_options(devices: Sequence | None = None) -> dict | None:
    """The XLA compiler options `compile_steps` uses by default: `CPU_COMPILER_OPTIONS` when every device
    is a CPU and the environment's `XLA_FLAGS` does not set the YNNPACK fusion option itself (the user's
    setting wins), else None (XLA's defaults; the option does not exist on GPU/TPU). If the installed
    jaxlib does not accept the option (`options_accepted`, probed once per process), None as well, with one
    warning, instead of a failure at every compile.

    Args:
      devices: the devices the program runs on; default `jax.devices()`.
    Returns: a new dict of options for `jax.jit(..., compiler_options=...)`, or None.
    """
    devices = jax.devices() if devices is None else devices
    if not devices or any(d.platform != "cpu" for d in devices):
        return None
    if _YNN_FUSION_OPTION in os.environ.get("XLA_FLAGS", ""):
        return None
    if not options_accepted(CPU_COMPILER_OPTIONS, devices[0]):
        return None
    return dict(CPU_COMPILER_OPTIONS)


# Which option sets this process's XLA accepts: {(device platform, sorted option items): bool}, probed once each.
_ACCEPTED: dict[tuple, bool] = {}


def options_accepted(options: Mapping, device=None) -> bool:
    """Whether the installed jaxlib's XLA compiles a program with `options`, probed once per process.

    An option that an older or newer jaxlib does not know (a renamed `DebugOptions` field, an enum value
    that no longer exists) would fail every compile; `default_compiler_options` asks this instead and falls
    back to XLA's defaults. The probe compiles a one-addition program for `device`; the first refusal of a
    given set of options warns once (a `UserWarning` naming the options and XLA's reason), later calls
    answer from the cache without warning.

    Args:
      options: a dict of XLA `DebugOptions` fields to values.
      device: the device to compile for; default `jax.devices()[0]`.
    Returns: True if a program compiles with `options`, False (after the one warning) if XLA refuses them.
    """
    device = jax.devices()[0] if device is None else device
    key = (device.platform, tuple(sorted((str(k), str(v)) for k, v in options.items())))
    if key not in _ACCEPTED:
        probe = jax.ShapeDtypeStruct((), jnp.float32, sharding=SingleDeviceSharding(device))
        try:
            jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(probe).compile()
            _ACCEPTED[key] = True
        except jax.errors.JaxRuntimeError as error:  # INVALID_ARGUMENT: No such compile option / not a valid enum
            _ACCEPTED[key] = False
            reason = " ".join(str(error).split())
            warnings.warn(f"default_compiler_options: the installed jaxlib {jax.lib.__version__} refuses the compiler "
                          f"options {dict(options)} ({reason}); compiling with XLA's default options instead, which "
                          f"may be slower (see jaxnets.train.CPU_COMPILER_OPTIONS).", UserWarning, stacklevel=3)
    return _ACCEPTED[key]



class Jitted:
    """A function compiled by `jaxnets.jit`: a `jax.jit` wrapper created at the first use.

    The options are resolved at the first call (or `.lower`, `.trace`, ...), not when the function is
    decorated, so decorating at import time neither starts JAX's backends nor fixes the devices before
    `jax.distributed.initialize`. Every attribute of the `jax.jit` object (`lower`, `trace`,
    `eval_shape`, `clear_cache`) is available on it.

    Attributes:
      compiler_options: the options the programs are compiled with (resolved on first access; None
        means XLA's defaults).
    """

    def __init__(self, fun: Callable, jit_kwargs: dict):
        self._fun, self._jit_kwargs, self._jitted, self._nested = fun, dict(jit_kwargs), None, None
        functools.update_wrapper(self, fun)

    def _resolve(self):
        if self._jitted is None:
            kwargs = dict(self._jit_kwargs)
            if "compiler_options" not in kwargs:
                kwargs["compiler_options"] = default_compiler_options(_devices(kwargs))
            self._options = kwargs["compiler_options"]
            self._jitted = jax.jit(self._fun, **kwargs)
        return self._jitted

    @property
    def compiler_options(self) -> dict | None:
        self._resolve()
        return self._options

    def __call__(self, *args, **kwargs):
        jitted = self._resolve()
        if not self._options:
            return jitted(*args, **kwargs)
        try:
            return jitted(*args, **kwargs)
        except ValueError as error:
            # Called while another jax.jit (or scan, cond, ...) traces: JAX takes compiler options on the
            # top-level program only, so the function is inlined without them and the outer program's apply.
            if "can only be passed to top-level" not in str(error):
                raise
            if self._nested is None:
                self._nested = jax.jit(self._fun, **{k: v for k, v in self._jit_kwargs.items()
                                                     if k != "compiler_options"})
            return self._nested(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_fun", "_jit_kwargs", "_jitted", "_nested", "_options"):
            raise AttributeError(name)
        return getattr(self._resolve(), name)

    def __get__(self, obj, objtype=None):
        # A method decorated with jaxnets.jit: bind `self` as the first argument, as jax.jit does.
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"jaxnets.jit({getattr(self._fun, '__qualname__', repr(self._fun))})"


def _devices(jit_kwargs: dict):
    """The devices the program will run on, as far as the jit arguments say: `device=`, `backend=`, else None
    (the default backend's devices)."""
    if jit_kwargs.get("device") is not None:
        return [jit_kwargs["device"]]
    if jit_kwargs.get("backend") is not None:
        return jax.devices(jit_kwargs["backend"])
    return None


def jit(fun: Callable | None = None, /, **jit_kwargs) -> Jitted | Callable[[Callable], Jitted]:
    """`jax.jit(fun, **jit_kwargs)` compiled with jaxnets' default compiler options.

    Usage: `jaxnets.jit(f)`, `@jaxnets.jit`, `@jaxnets.jit(static_argnames="train")` or
    `functools.partial(jaxnets.jit, donate_argnums=0)`.

    Args:
      fun: the function to compile; omitted, a decorator taking it is returned.
      **jit_kwargs: any keyword argument of `jax.jit` (`static_argnums`, `static_argnames`,
        `donate_argnums`, `in_shardings`, ...). `compiler_options` is
        `jaxnets.train.default_compiler_options()` for the devices the program runs on unless given
        (`compiler_options=None`: XLA's defaults; a dict: those options instead of jaxnets').
    Returns: a `Jitted`, called and lowered like the result of `jax.jit`.
    Raises:
      TypeError: `fun` is not callable.
    PyTorch: `torch.compile(fun)`, with the backend's settings chosen by the library.
    """
    if fun is None:
        return functools.partial(jit, **jit_kwargs)
    if not callable(fun):
        raise TypeError(f"jit: fun must be a callable (the function to compile), got {type(fun).__name__}.")
    return Jitted(fun, jit_kwargs)
