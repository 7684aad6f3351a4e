"""`jaxnets.jit`: `jax.jit` with the compiler options jaxnets' own compiled programs use.

On CPU, XLA (jaxlib 0.10) runs convolutions through YNNPACK by default, several times slower for
convolutional networks than XLA's own; `jaxnets.train.default_compiler_options()` turns that off per
program. `fit`, `evaluate`, `tta_predict`, `ensemble_predict` and the runs of `jaxnets.train.load_run`
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
from collections.abc import Callable

import jax

from jaxnets.train.parallel import default_compiler_options

__all__ = ["jit", "Jitted"]


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
