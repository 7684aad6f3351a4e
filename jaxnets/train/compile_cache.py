"""A process-wide cache of `compile_steps` results, so repeated `fit`/`evaluate` calls compile once.

`fit` and `evaluate` ask `cached_compile_steps` for their steps: calls with the same mode, loss,
preprocessing, augmentation, devices, precision and compiler options (compared by identity for
functions, by value for the rest) get the same `CompiledSteps` object back, whose `jax.jit` programs
are then reused for the same model and optimizer objects (a resume, a sweep over seeds).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

from jaxnets.train.parallel import CompiledSteps, compile_steps

__all__ = ["cached_compile_steps", "cache_info", "clear_cache"]

_MAXSIZE = 8  # CompiledSteps kept; each holds its compiled programs (device memory for their constants)


@functools.lru_cache(maxsize=_MAXSIZE)
def _compiled(mode: str, loss_fn: Callable, preprocess, augment, devices: tuple | None, precision,
              compiler_options) -> CompiledSteps:
    if isinstance(compiler_options, tuple):  # a dict arrives as sorted items (hashable)
        compiler_options = dict(compiler_options)
    return compile_steps(mode, loss_fn=loss_fn, preprocess=preprocess, augment=augment,
                         devices=None if devices is None else list(devices), precision=precision,
                         compiler_options=compiler_options)


def cached_compile_steps(mode: str, *, loss_fn: Callable, preprocess: Callable | None = None,
                         augment: Callable | None = None, devices: Sequence | None = None, precision=None,
                         compiler_options="auto") -> CompiledSteps:
    """`compile_steps(mode, ...)`, cached on its arguments (the most recent few are kept).

    Args: as `compile_steps`; `precision` a `Policy` or None (hashable), `compiler_options` a dict,
      "auto" or None.
    Returns: the cached `CompiledSteps` (the same object for the same arguments).
    """
    options = tuple(sorted(compiler_options.items())) if isinstance(compiler_options, Mapping) else compiler_options
    return _compiled(mode, loss_fn, preprocess, augment, None if devices is None else tuple(devices), precision,
                     options)


def cache_info():
    """The cache's statistics, `functools.lru_cache`'s `CacheInfo(hits, misses, maxsize, currsize)`."""
    return _compiled.cache_info()


def clear_cache() -> None:
    """Forget every cached `CompiledSteps` (their compiled programs are freed when no longer referenced)."""
    _compiled.cache_clear()
