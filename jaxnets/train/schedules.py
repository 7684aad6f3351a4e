"""Learning-rate schedules equal to ``torch.optim.lr_scheduler`` at every epoch boundary.

Every function returns an ``optax.Schedule``: a pure, jit-friendly function ``step -> lr`` of the
optimizer's update count (0 for the first update), to be passed as ``optimizer(...,
learning_rate=schedule)``. The update with count ``step`` uses ``schedule(step)``, which is what
``torch.optim.lr_scheduler`` gives when ``scheduler.step()`` is called after every optimizer step (for
the step-based schedules) or after every epoch (for the per-epoch ones).

Two families:
- In optimizer steps: ``cosine`` and ``warm_restarts``. ``cosine(peak, E * S)`` evaluated at step
  ``e * S`` equals ``CosineAnnealingLR(T_max=E)`` stepped once per epoch at epoch ``e`` (and between
  the boundaries it keeps decaying smoothly, per step). Pass ``steps_per_epoch=S`` to count
  ``total_steps``/``period`` in EPOCHS and hold the rate constant inside each epoch, exactly like
  torch's ``scheduler.step()`` once per epoch. The same holds for any caller that evaluates a schedule
  on an epoch counter: then its units are epochs.
- Per epoch: ``exponential``, ``step_decay``, ``inverse_time`` and ``per_epoch`` are
  ``peak * factor(epoch)`` with ``epoch = step // steps_per_epoch`` (integer floor division, exact),
  i.e. ``LambdaLR`` stepped once per epoch. Where the issue's signature has no peak learning rate,
  ``peak`` is a keyword defaulting to 1.0: the schedule then returns the factor multiplying torch's base
  learning rate, so ``peak=`` must be set to use it as a learning rate directly.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["cosine", "warm_restarts", "exponential", "step_decay", "inverse_time", "per_epoch"]


# ----------------------------------------------------------------------------------------------
# argument checks (shared with jaxnets.train.optim)
# ----------------------------------------------------------------------------------------------
def _number(fn: str, name: str, value, *, low: float | None = None, low_open: bool = False,
            high: float | None = None, high_open: bool = False) -> float:
    """Check that ``value`` is a finite real number in the given interval and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__} {value!r}.")
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or too_low or too_high:
        if low is not None and high is not None:
            wanted = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            wanted = f"{'>' if low_open else '>='} {low}"
        else:
            wanted = "finite"
        raise ValueError(f"{fn}: {name} must be {wanted}, got {value!r}.")
    return v


def _integer(fn: str, name: str, value, *, low: int) -> int:
    """Check that ``value`` is an integer (not a bool) ``>= low`` and return it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < low:
        raise ValueError(f"{fn}: {name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def _epoch(step, steps_per_epoch: int | None) -> jax.Array:
    """Schedule time at optimizer step ``step``: the step itself, or completed epochs when stepping per epoch."""
    step = jnp.asarray(step)
    if steps_per_epoch is None or steps_per_epoch == 1:
        return step
    return step // steps_per_epoch  # integer floor division: exact at and between the epoch boundaries


def _integer_power(base: float, e) -> jax.Array:
    """``base ** e`` in float32 for integer ``e >= 0`` (any shape), within a few float32 roundings.

    ``jnp.power`` goes through ``exp(e * log(base))`` and is off by up to 6e-6 (relative) for
    ``0.9 ** e`` over 200 epochs. Here bit ``k`` of ``e`` selects ``base ** (2 ** k)`` (computed in
    float64, rounded once) and the selected factors are multiplied: a handful of roundings for any ``e``.
    """
    with np.errstate(over="ignore", under="ignore"):
        table = jnp.asarray(np.power(np.float64(base), 2.0 ** np.arange(31)), jnp.float32)
    bits = (jnp.asarray(e).astype(jnp.int32)[..., None] >> jnp.arange(31)) & 1
    return jnp.prod(jnp.where(bits == 1, table, 1.0), axis=-1)


def _cosine_anneal(peak, final, t, period) -> jax.Array:
    """``final + (peak - final) * (1 + cos(pi * t / period)) / 2`` for ``0 <= t <= period``.

    Computed as ``final + (peak - final) * sin(pi/2 * (period - t) / period) ** 2`` (the same value):
    ``1 + cos(x)`` cancels in float32 as ``cos(x) -> -1`` (1e-5 relative error on the last epochs),
    while ``period - t`` is exact and ``sin`` keeps full relative precision at small angles.
    """
    s = jnp.sin((period - t) / period * (math.pi / 2))
    return final + (peak - final) * s * s


# ----------------------------------------------------------------------------------------------
# schedules in optimizer steps
# ----------------------------------------------------------------------------------------------
def cosine(peak: float, total_steps: int, *, final: float = 0.0, warmup_steps: int = 0,
           steps_per_epoch: int | None = None) -> optax.Schedule:
    """Cosine annealing from ``peak`` to ``final`` over ``total_steps``, optionally after a linear warm-up.

    ``lr(t) = peak * t / W`` for ``t < W`` (linear warm-up from 0, ``W = warmup_steps``), then
    ``lr(t) = final + (peak - final) * (1 + cos(pi * (t - W) / (T - W))) / 2`` for ``W <= t <= T``
    (``T = total_steps``), and ``final`` after ``T``. ``t`` is the optimizer step, or the epoch
    ``step // steps_per_epoch`` when ``steps_per_epoch`` is given (then ``total_steps`` and
    ``warmup_steps`` count epochs and the rate is constant inside an epoch).

    PyTorch: ``CosineAnnealingLR(opt, T_max=total_steps, eta_min=final)`` with ``lr=peak`` and no warm-up
    (stepped per batch, or per epoch with ``steps_per_epoch``). Beyond ``T_max`` torch's recursive
    formula climbs back up (period ``2 * T_max``); this schedule stays at ``final``. The warm-up has no
    exact torch scheduler (``LinearLR`` needs ``start_factor > 0``); it equals
    ``optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, final)``.

    Args:
      peak: learning rate at the end of the warm-up (at step 0 without one), ``>= 0``.
      total_steps: length of warm-up plus decay, an integer ``> warmup_steps``.
      final: learning rate reached at ``total_steps`` (torch's ``eta_min``), ``>= 0``.
      warmup_steps: length of the linear warm-up, an integer in ``[0, total_steps)``.
      steps_per_epoch: if given, count ``total_steps``/``warmup_steps`` in epochs of this many steps.
    Returns: an ``optax.Schedule``: step (int, or int32 array under ``jit``) -> float32 learning rate.
    Raises: ``ValueError``/``TypeError`` for arguments outside the ranges above.
    """
    fn = "schedules.cosine"
    peak = _number(fn, "peak", peak, low=0.0)
    final = _number(fn, "final", final, low=0.0)
    total_steps = _integer(fn, "total_steps", total_steps, low=1)
    warmup_steps = _integer(fn, "warmup_steps", warmup_steps, low=0)
    if warmup_steps >= total_steps:
        raise ValueError(f"{fn}: warmup_steps must be smaller than total_steps, got warmup_steps="
                         f"{warmup_steps} and total_steps={total_steps}.")
    if steps_per_epoch is not None:
        steps_per_epoch = _integer(fn, "steps_per_epoch", steps_per_epoch, low=1)
    decay_steps = total_steps - warmup_steps

    def schedule(step):
        t = _epoch(step, steps_per_epoch)
        lr = _cosine_anneal(peak, final, jnp.clip(t - warmup_steps, 0, decay_steps), decay_steps)
        if warmup_steps == 0:
            return lr
        return jnp.where(t < warmup_steps, peak * t / warmup_steps, lr)

    return schedule


def warm_restarts(period: int, *, period_mult: int = 1, final: float = 0.0, peak: float = 1.0,
                  steps_per_epoch: int | None = None) -> optax.Schedule:
    """Cosine annealing with warm restarts (SGDR): cycles of length ``period * period_mult ** i``.

    Inside cycle ``i`` (length ``T_i``, started ``t_cur`` steps ago):
    ``lr = final + (peak - final) * (1 + cos(pi * t_cur / T_i)) / 2``; at each restart ``lr = peak``.
    Cycle ``i`` starts at ``period * (period_mult ** i - 1) / (period_mult - 1)`` (``period * i`` when
    ``period_mult == 1``); the cycle is found by exact integer comparisons, never a float logarithm,
    so restarts land exactly on their step. ``t`` is the optimizer step, or the epoch
    ``step // steps_per_epoch`` when ``steps_per_epoch`` is given (then ``period`` counts epochs).

    PyTorch: ``CosineAnnealingWarmRestarts(opt, T_0=period, T_mult=period_mult, eta_min=final)`` with
    ``lr=peak``, ``scheduler.step()`` after every optimizer step (or every epoch with ``steps_per_epoch``).
    Reference: Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, ICLR 2017.

    Args:
      period: length of the first cycle (torch's ``T_0``), an integer ``>= 1``.
      period_mult: factor by which each cycle is longer than the previous (``T_mult``), integer ``>= 1``.
      final: minimum learning rate at the end of each cycle (``eta_min``), ``>= 0``.
      peak: learning rate at each restart (torch's base ``lr``), ``>= 0``; the default 1.0 makes the
        schedule the factor multiplying a base learning rate.
      steps_per_epoch: if given, count ``period`` in epochs of this many steps.
    Returns: an ``optax.Schedule``: step -> float32 learning rate.
    Raises: ``ValueError``/``TypeError`` for arguments outside the ranges above.
    """
    fn = "schedules.warm_restarts"
    period = _integer(fn, "period", period, low=1)
    period_mult = _integer(fn, "period_mult", period_mult, low=1)
    final = _number(fn, "final", final, low=0.0)
    peak = _number(fn, "peak", peak, low=0.0)
    if steps_per_epoch is not None:
        steps_per_epoch = _integer(fn, "steps_per_epoch", steps_per_epoch, low=1)
    if period_mult > 1:
        # Start and length of every cycle that starts within an int32 step count (at most 31 cycles).
        starts, lengths, start, length = [], [], 0, period
        while start < 2**31 - 1:
            starts.append(start)
            lengths.append(min(length, 2**31 - 1))
            start, length = start + length, length * period_mult

    def schedule(step):
        t = _epoch(step, steps_per_epoch)
        if period_mult == 1:
            return _cosine_anneal(peak, final, t % period, period)
        cycle_starts = jnp.asarray(starts, t.dtype)
        i = jnp.sum(t[..., None] >= cycle_starts[1:], axis=-1)  # current cycle, by exact comparisons
        return _cosine_anneal(peak, final, t - cycle_starts[i], jnp.asarray(lengths, t.dtype)[i])

    return schedule


# ----------------------------------------------------------------------------------------------
# schedules per epoch: peak * factor(epoch), torch's LambdaLR
# ----------------------------------------------------------------------------------------------
def per_epoch(fn: Callable[[jax.Array], jax.Array], *, steps_per_epoch: int,
              peak: float = 1.0) -> optax.Schedule:
    """``lr = peak * fn(epoch)`` with ``epoch = step // steps_per_epoch``: a lambda schedule per epoch.

    ``fn`` receives the epoch as an int32 array (traced under ``jit``), so it must use ``jnp``
    operations and no Python ``if`` on its argument: write ``jnp.where(e < 10, 1.0, 0.1)``, not
    ``1.0 if e < 10 else 0.1``; arithmetic such as ``0.95 ** e`` or ``1 / (1 + e)`` works as is.

    PyTorch: ``LambdaLR(opt, lr_lambda=fn)`` with ``lr=peak``, ``scheduler.step()`` once per epoch.

    Args:
      fn: the factor as a function of the epoch (0 during the first epoch).
      steps_per_epoch: optimizer steps per epoch, an integer ``>= 1``.
      peak: the base learning rate multiplied by ``fn`` (torch's ``lr``), ``>= 0``; with the default
        1.0 the schedule returns ``fn(epoch)`` itself.
    Returns: an ``optax.Schedule``: step -> float learning rate.
    Raises: ``TypeError`` if ``fn`` is not callable; ``ValueError``/``TypeError`` for bad numbers.
    """
    name = "schedules.per_epoch"
    if not callable(fn):
        raise TypeError(f"{name}: fn must be a callable epoch -> factor, got {type(fn).__name__} {fn!r}.")
    return _per_epoch(name, fn, steps_per_epoch, peak)


def _per_epoch(name: str, factor: Callable, steps_per_epoch, peak) -> optax.Schedule:
    steps_per_epoch = _integer(name, "steps_per_epoch", steps_per_epoch, low=1)
    peak = _number(name, "peak", peak, low=0.0)

    def schedule(step):
        return peak * jnp.asarray(factor(_epoch(step, steps_per_epoch)), dtype=float)

    return schedule


def exponential(gamma: float, *, steps_per_epoch: int, peak: float = 1.0) -> optax.Schedule:
    """``lr = peak * gamma ** epoch``, ``epoch = step // steps_per_epoch``: constant inside an epoch.

    PyTorch: ``ExponentialLR(opt, gamma)`` with ``lr=peak``, ``scheduler.step()`` once per epoch.

    Args:
      gamma: multiplicative factor per epoch, ``> 0``.
      steps_per_epoch: optimizer steps per epoch, an integer ``>= 1``.
      peak: learning rate of the first epoch (torch's ``lr``), ``>= 0``; default 1.0 (the factor).
    Returns: an ``optax.Schedule``: step -> float learning rate.
    Raises: ``ValueError``/``TypeError`` for arguments outside the ranges above.
    """
    name = "schedules.exponential"
    gamma = _number(name, "gamma", gamma, low=0.0, low_open=True)
    return _per_epoch(name, lambda e: _integer_power(gamma, e), steps_per_epoch, peak)


def step_decay(step_size: int, *, gamma: float = 0.1, steps_per_epoch: int,
               peak: float = 1.0) -> optax.Schedule:
    """``lr = peak * gamma ** (epoch // step_size)``: multiply by ``gamma`` every ``step_size`` epochs.

    PyTorch: ``StepLR(opt, step_size, gamma=0.1)`` with ``lr=peak``, ``scheduler.step()`` once per epoch.

    Args:
      step_size: epochs between decays, an integer ``>= 1``.
      gamma: multiplicative factor per decay, ``> 0``.
      steps_per_epoch: optimizer steps per epoch, an integer ``>= 1``.
      peak: learning rate of the first epochs (torch's ``lr``), ``>= 0``; default 1.0 (the factor).
    Returns: an ``optax.Schedule``: step -> float learning rate.
    Raises: ``ValueError``/``TypeError`` for arguments outside the ranges above.
    """
    name = "schedules.step_decay"
    step_size = _integer(name, "step_size", step_size, low=1)
    gamma = _number(name, "gamma", gamma, low=0.0, low_open=True)
    return _per_epoch(name, lambda e: _integer_power(gamma, e // step_size), steps_per_epoch, peak)


def inverse_time(decay_rate: float, *, steps_per_epoch: int, peak: float = 1.0) -> optax.Schedule:
    """``lr = peak / (1 + decay_rate * epoch)``, ``epoch = step // steps_per_epoch``.

    PyTorch: ``LambdaLR(opt, lr_lambda=lambda e: 1 / (1 + decay_rate * e))`` with ``lr=peak``, stepped
    once per epoch (torch has no dedicated class). Keras' ``InverseTimeDecay(staircase=True)`` with
    ``decay_steps=steps_per_epoch`` is the same schedule.

    Args:
      decay_rate: ``>= 0``; the rate halves after ``1 / decay_rate`` epochs.
      steps_per_epoch: optimizer steps per epoch, an integer ``>= 1``.
      peak: learning rate of the first epoch (torch's ``lr``), ``>= 0``; default 1.0 (the factor).
    Returns: an ``optax.Schedule``: step -> float learning rate.
    Raises: ``ValueError``/``TypeError`` for arguments outside the ranges above.
    """
    name = "schedules.inverse_time"
    decay_rate = _number(name, "decay_rate", decay_rate, low=0.0)
    return _per_epoch(name, lambda e: 1.0 / (1.0 + decay_rate * e), steps_per_epoch, peak)
