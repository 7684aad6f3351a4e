"""Learning-rate schedules equal to `torch.optim.lr_scheduler`.

Every function returns an `optax.Schedule`: a pure, jit-friendly function `step -> lr` of the
optimizer's update count (0 for the first update), to be passed as `learning_rate=` of an optimizer
(`jaxnets.train.sgd(schedule, ...)`). The update with count `step` uses `schedule(step)`, which is
what `torch.optim.lr_scheduler` gives when `scheduler.step()` is called after every optimizer step
(for the step-based schedules) or after every epoch (for the per-epoch ones).

One convention: the peak (torch's base `lr`, OneCycleLR's `max_lr`) is the FIRST positional argument
of every schedule, as `optax.cosine_decay_schedule(init_value, ...)`; `sequential` (a combinator of
schedules) is the one exception. The old forms `warm_restarts(period, peak=...)`,
`exponential(gamma, peak=...)`, `step_decay(step_size, peak=...)`, ``inverse_time(decay_rate,
peak=...)` and `per_epoch(fn, peak=...)` still work for one release with a `DeprecationWarning``.

Two families:
- In optimizer steps: `cosine`, `cosine_annealing`, `warm_restarts`, `linear`, `one_cycle`.
  Pass `steps_per_epoch=S` (not to `one_cycle`, which torch steps per batch) to count their lengths
  in EPOCHS and hold the rate constant inside each epoch, exactly like torch's `scheduler.step()` once
  per epoch.
- Per epoch: `exponential`, `step_decay`, `multistep`, `inverse_time` and `per_epoch` are
  `peak * factor(epoch)` with `epoch = step // steps_per_epoch` (integer floor division, exact),
  i.e. `LambdaLR` stepped once per epoch.

Precision: rates are computed in the default float dtype: float64 when `jax_enable_x64` is on (then
equal to torch's float64 values to a few ulps), float32 otherwise (within a few float32 roundings of
torch's value). `peak` (and `final`/`eta_min`) may be a jax array, traced under `jax.vmap` too;
the other arguments shape the schedule and are Python numbers.

`ReduceLROnPlateau` (a host-side object, it needs the validation metric) is in
`jaxnets.train.plateau`.
"""
from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.checks import check_bool, check_choice, check_int, check_positive_int, check_real, check_real_or_array

__all__ = ["cosine", "cosine_annealing", "warm_restarts", "linear", "one_cycle", "sequential", "per_epoch",
           "exponential", "step_decay", "multistep", "inverse_time"]


_MISSING = object()  # an argument not passed (None may be a value)


def _real(fn: str, name: str, value, **bounds):
    """A rate: a real number, or an array (traced under `jax.vmap` too)."""
    return check_real_or_array(fn, name, value, **bounds)


def _spe(fn: str, steps_per_epoch):
    return None if steps_per_epoch is None else check_positive_int(fn, "steps_per_epoch", steps_per_epoch)


def _peak_first(fn: str, second_name: str, peak, second, deprecated: dict):
    """`(peak, second)` from the call `fn(peak, second, ...)`, or from the old form
    `fn(second, ..., peak=p)` (peak 1.0 when not given), which warns: the convention is the peak first."""
    unknown = sorted(set(deprecated) - {"peak"})
    if unknown:
        raise TypeError(f"{fn}: unexpected keyword argument {unknown[0]!r}.")
    if peak is not _MISSING and second is not _MISSING:
        if "peak" in deprecated:
            raise TypeError(f"{fn}: the peak learning rate was given twice, as the first argument and as peak=; "
                            f"call {fn}(peak, {second_name}, ...).")
        return peak, second
    old = second if second is not _MISSING else peak
    if old is _MISSING:
        raise TypeError(f"{fn}: missing the arguments peak and {second_name}; call {fn}(peak, {second_name}, ...).")
    warnings.warn(f"{fn}({second_name}, ..., peak=p) is deprecated and will be removed in the next release; "
                  f"call {fn}(p, {second_name}, ...): every schedule takes the peak learning rate first.",
                  DeprecationWarning, stacklevel=3)
    return deprecated.get("peak", 1.0), old


def _promotion_safe(schedule: optax.Schedule) -> optax.Schedule:
    """`schedule` evaluated under standard dtype promotion, so it (and an epoch lambda such as
    `lambda e: 0.95 ** e`, a Python float to an int32 power) also works in a process that sets
    `jax_numpy_dtype_promotion="strict"`; the values are the same."""

    @functools.wraps(schedule)
    def promoted(step):
        with jax.numpy_dtype_promotion("standard"):
            return schedule(step)

    return promoted


def _epoch(step, steps_per_epoch: int | None) -> jax.Array:
    """Schedule time at optimizer step `step`: the step itself, or completed epochs when stepping per epoch."""
    step = jnp.asarray(step)
    if steps_per_epoch is None or steps_per_epoch == 1:
        return step
    return step // steps_per_epoch  # integer floor division: exact at and between the epoch boundaries


def _integer_power(base: float, e) -> jax.Array:
    """`base ** e` for integer `e >= 0` (any shape), within a few roundings of the float dtype.

    `jnp.power` goes through `exp(e * log(base))` and is off by up to 6e-6 (relative) for
    `0.9 ** e` over 200 epochs in float32. Here bit `k` of `e` selects `base ** (2 ** k)` (computed
    in float64 on the host, rounded once to the default float dtype: float64 when x64 is on) and the
    selected factors are multiplied: a handful of roundings for any `e`.
    """
    with np.errstate(over="ignore", under="ignore"):
        table = jnp.asarray(np.power(np.float64(base), 2.0 ** np.arange(31)), dtype=float)
    bits = (jnp.asarray(e).astype(jnp.int32)[..., None] >> jnp.arange(31, dtype=jnp.int32)) & 1
    return jnp.prod(jnp.where(bits == 1, table, 1.0), axis=-1)


def _cosine_anneal(peak, final, t, period) -> jax.Array:
    """`final + (peak - final) * (1 + cos(pi * t / period)) / 2` for any `t` (period `2 * period`).

    Computed as `final + (peak - final) * sin(pi/2 * (period - t) / period) ** 2` (the same value):
    `1 + cos(x)` cancels as `cos(x) -> -1` (1e-5 relative error on the last float32 epochs), while
    `period - t` is exact and `sin` keeps full relative precision at small angles. In the default float
    dtype (float64 when x64 is on).
    """
    t = jnp.asarray(t)
    s = jnp.sin((period - t).astype(float) / period * (math.pi / 2))
    return final + (peak - final) * s * s


# ----------------------------------------------------------------------------------------------
# schedules in optimizer steps
# ----------------------------------------------------------------------------------------------
def cosine(peak: float, total_steps: int, *, final: float = 0.0, warmup_steps: int = 0,
           steps_per_epoch: int | None = None) -> optax.Schedule:
    """Cosine annealing from `peak` to `final` over `total_steps`, optionally after a linear warm-up,
    then FLAT at `final`.

    `lr(t) = peak * t / W` for `t < W` (linear warm-up from 0, `W = warmup_steps`), then
    `lr(t) = final + (peak - final) * (1 + cos(pi * (t - W) / (T - W))) / 2` for `W <= t <= T`
    (`T = total_steps`), and `final` after `T`. `t` is the optimizer step, or the epoch
    `step // steps_per_epoch` when `steps_per_epoch` is given (then `total_steps` and
    `warmup_steps` count epochs and the rate is constant inside an epoch).

    PyTorch: for `t <= T` and no warm-up, `CosineAnnealingLR(opt, T_max=total_steps, eta_min=final)`
    with `lr=peak`. Beyond `T_max` torch climbs back up (period `2 * T_max`) while this schedule
    stays at `final`; `cosine_annealing` is torch's schedule for every `t`. The warm-up equals
    `optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, total_steps, final)`.

    Args:
      peak: learning rate at the end of the warm-up (at step 0 without one), `>= 0`; may be an array.
      total_steps: length of warm-up plus decay, an int `> warmup_steps`.
      final: learning rate reached at `total_steps` (torch's `eta_min`), `>= 0`.
      warmup_steps: length of the linear warm-up, an int in `[0, total_steps)`.
      steps_per_epoch: if given, count `total_steps`/`warmup_steps` in epochs of this many steps.
    Returns: an `optax.Schedule`: step -> learning rate (float32, or float64 when x64 is on).
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    """
    fn = "schedules.cosine"
    peak = _real(fn, "peak", peak, minimum=0.0)
    final = _real(fn, "final", final, minimum=0.0)
    total_steps = check_positive_int(fn, "total_steps", total_steps)
    warmup_steps = check_int(fn, "warmup_steps", warmup_steps, minimum=0)
    if warmup_steps >= total_steps:
        raise ValueError(f"{fn}: warmup_steps must be smaller than total_steps, got warmup_steps="
                         f"{warmup_steps} and total_steps={total_steps}.")
    steps_per_epoch = _spe(fn, steps_per_epoch)
    decay_steps = total_steps - warmup_steps

    def schedule(step):
        t = _epoch(step, steps_per_epoch)
        lr = _cosine_anneal(peak, final, jnp.clip(t - warmup_steps, 0, decay_steps), decay_steps)
        if warmup_steps == 0:
            return lr
        return jnp.where(t < warmup_steps, peak * t / warmup_steps, lr)

    return _promotion_safe(schedule)


def cosine_annealing(peak: float, t_max: int, *, eta_min: float = 0.0,
                     steps_per_epoch: int | None = None) -> optax.Schedule:
    """torch's `CosineAnnealingLR` for every `t`: `eta_min + (peak - eta_min) * (1 + cos(pi t / t_max)) / 2`.

    Past `t_max` the formula keeps going: the rate climbs back to `peak` at `2 * t_max` (torch's
    recursive form has the same values). `t` is the optimizer step, or `step // steps_per_epoch`.

    Args:
      peak: torch's base `lr`, `>= 0`; may be an array. t_max: half period, an int `>= 1`.
      eta_min: the minimum, `>= 0`. steps_per_epoch: count `t_max` in epochs of this many steps.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.

    PyTorch: `CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)`, stepped per step (or per epoch with
    `steps_per_epoch`).
    """
    fn = "schedules.cosine_annealing"
    peak = _real(fn, "peak", peak, minimum=0.0)
    eta_min = _real(fn, "eta_min", eta_min, minimum=0.0)
    t_max = check_positive_int(fn, "t_max", t_max)
    steps_per_epoch = _spe(fn, steps_per_epoch)

    def schedule(step):
        t = _epoch(step, steps_per_epoch) % (2 * t_max)  # exact: the cosine has period 2 * t_max
        return _cosine_anneal(peak, eta_min, t, t_max)

    return _promotion_safe(schedule)


def warm_restarts(peak=_MISSING, /, period=_MISSING, *, period_mult: int = 1, final: float = 0.0,
                  steps_per_epoch: int | None = None, **deprecated) -> optax.Schedule:
    """Cosine annealing with warm restarts (SGDR): cycles of length `period * period_mult ** i`.

    Inside cycle `i` (length `T_i`, started `t_cur` steps ago):
    `lr = final + (peak - final) * (1 + cos(pi * t_cur / T_i)) / 2`; at each restart `lr = peak`.
    Cycle `i` starts at `period * (period_mult ** i - 1) / (period_mult - 1)` (`period * i` when
    `period_mult == 1`); the cycle is found by exact integer comparisons, never a float logarithm,
    so restarts land exactly on their step. `t` is the optimizer step, or the epoch
    `step // steps_per_epoch` when `steps_per_epoch` is given (then `period` counts epochs).

    PyTorch: `CosineAnnealingWarmRestarts(opt, T_0=period, T_mult=period_mult, eta_min=final)` with
    `lr=peak`, `scheduler.step()` after every optimizer step (or every epoch with `steps_per_epoch`).
    Reference: Loshchilov & Hutter, SGDR: Stochastic Gradient Descent with Warm Restarts, ICLR 2017.

    Args:
      peak: learning rate at each restart (torch's base `lr`), `>= 0`; may be an array.
      period: length of the first cycle (torch's `T_0`), an int `>= 1`.
      period_mult: factor by which each cycle is longer than the previous (`T_mult`), int `>= 1`.
      final: minimum learning rate at the end of each cycle (`eta_min`), `>= 0`.
      steps_per_epoch: if given, count `period` in epochs of this many steps.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    Deprecated: `warm_restarts(period, ..., peak=1.0)` (peak as a keyword) warns; it goes next release.
    """
    fn = "schedules.warm_restarts"
    peak, period = _peak_first(fn, "period", peak, period, deprecated)
    period = check_positive_int(fn, "period", period)
    period_mult = check_positive_int(fn, "period_mult", period_mult)
    final = _real(fn, "final", final, minimum=0.0)
    peak = _real(fn, "peak", peak, minimum=0.0)
    steps_per_epoch = _spe(fn, steps_per_epoch)
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

    return _promotion_safe(schedule)


def linear(peak: float, *, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5,
           steps_per_epoch: int | None = None) -> optax.Schedule:
    """torch's `LinearLR`: a linear ramp of the factor from `start_factor` to `end_factor`.

    `lr(t) = peak * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters)`.

    Args:
      peak: torch's base `lr`, `>= 0`; may be an array.
      start_factor: in `(0, 1]` (torch's range). end_factor: in `[0, 1]`.
      total_iters: steps (or epochs) of the ramp, an int `>= 1`; constant afterwards.
      steps_per_epoch: count `total_iters` in epochs of this many steps.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.

    PyTorch: `LinearLR(opt, start_factor, end_factor, total_iters)` (torch's defaults).
    """
    fn = "schedules.linear"
    peak = _real(fn, "peak", peak, minimum=0.0)
    start_factor = check_real(fn, "start_factor", start_factor, minimum=0.0, maximum=1.0, min_inclusive=False)
    end_factor = check_real(fn, "end_factor", end_factor, minimum=0.0, maximum=1.0)
    total_iters = check_positive_int(fn, "total_iters", total_iters)
    steps_per_epoch = _spe(fn, steps_per_epoch)

    def schedule(step):
        t = jnp.minimum(_epoch(step, steps_per_epoch), total_iters)
        return peak * (start_factor + (end_factor - start_factor) * t / total_iters)

    return _promotion_safe(schedule)


def one_cycle(peak: float, total_steps: int, *, pct_start: float = 0.3, anneal_strategy: str = "cos",
              div_factor: float = 25.0, final_div_factor: float = 1e4,
              three_phase: bool = False) -> optax.Schedule:
    """torch's `OneCycleLR` (learning rate only), per optimizer step.

    From `peak / div_factor` up to `peak` over the first `pct_start * total_steps - 1` steps, then
    down to `peak / div_factor / final_div_factor` at step `total_steps - 1`; with `three_phase`: up,
    back down to `peak / div_factor` at `2 * pct_start * total_steps - 2`, then to the minimum. Each
    phase anneals by `end + (start - end) * (1 + cos(pi * pct)) / 2` (`"cos"`) or
    `start + (end - start) * pct` (`"linear"`), `pct` the fraction of the phase done. Past
    `total_steps - 1` the last phase's formula continues (torch raises an error there).

    Warning: torch's `OneCycleLR` also cycles the momentum (`cycle_momentum=True`, between 0.85 and
    0.95); this schedule is the learning rate only: compare with `cycle_momentum=False`.

    Args:
      peak: torch's `max_lr`, `>= 0`; may be an array. total_steps: an int `>= 2`.
      pct_start: in `(0, 1)`. anneal_strategy: `"cos"` or `"linear"`.
      div_factor, final_div_factor: `> 0`. three_phase: bool.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.

    PyTorch: `OneCycleLR(opt, max_lr=peak, total_steps=total_steps, pct_start, anneal_strategy,
    div_factor=div_factor, final_div_factor=final_div_factor, three_phase=three_phase)`, stepped per batch.
    """
    fn = "schedules.one_cycle"
    peak = _real(fn, "peak", peak, minimum=0.0)
    total_steps = check_int(fn, "total_steps", total_steps, minimum=2)
    pct_start = check_real(fn, "pct_start", pct_start, minimum=0.0, maximum=1.0, min_inclusive=False,
                           max_inclusive=False)
    anneal_strategy = check_choice(fn, "anneal_strategy", anneal_strategy, ("cos", "linear"))
    div_factor = check_real(fn, "div_factor", div_factor, minimum=0.0, min_inclusive=False)
    final_div_factor = check_real(fn, "final_div_factor", final_div_factor, minimum=0.0, min_inclusive=False)
    three_phase = check_bool(fn, "three_phase", three_phase)
    initial = peak / div_factor
    minimum = initial / final_div_factor
    if three_phase:  # (end step, start lr, end lr), torch's phases
        phases = [(pct_start * total_steps - 1, initial, peak),
                  (2 * pct_start * total_steps - 2, peak, initial),
                  (total_steps - 1, initial, minimum)]
    else:
        phases = [(pct_start * total_steps - 1, initial, peak), (total_steps - 1, peak, minimum)]

    def anneal(start, end, t, begin, end_step):
        begin, end_step = jnp.asarray(begin, dtype=float), jnp.asarray(end_step, dtype=float)
        pct = (t - begin) / (end_step - begin)  # exactly 1 at t == end_step
        if jax.config.jax_enable_x64:  # torch's formulas, in float64 as torch
            if anneal_strategy == "cos":
                return end + (start - end) / 2.0 * (jnp.cos(math.pi * pct) + 1)
            return (end - start) * pct + start
        # float32: the same values as a sum of two non-negative terms, each factor accurate where it is
        # small (torch's forms cancel, 0.3 - 0.288, and cos(pi/2 * pct) loses digits near pct = 1)
        rest = (end_step - t) / (end_step - begin)  # 1 - pct
        if anneal_strategy == "cos":
            c, s = jnp.sin(math.pi / 2 * rest), jnp.sin(math.pi / 2 * pct)
            return start * c * c + end * s * s
        return start * rest + end * pct

    def schedule(step):
        t = jnp.asarray(step).astype(float)
        # torch: the first phase with t <= end_step (the last phase for any later t)
        begins = [0.0] + [p[0] for p in phases[:-1]]
        lr = anneal(phases[-1][1], phases[-1][2], t, begins[-1], phases[-1][0])
        for (end_step, start, end), begin in reversed(list(zip(phases[:-1], begins[:-1], strict=True))):
            lr = jnp.where(t <= end_step, anneal(start, end, t, begin, end_step), lr)
        return lr

    return _promotion_safe(schedule)


def sequential(schedules: Sequence[optax.Schedule], milestones: Sequence[int], *,
               steps_per_epoch: int | None = None) -> optax.Schedule:
    """torch's `SequentialLR`: `schedules[i]` from milestone `i - 1` on, started at ITS OWN step 0.

    `lr(t) = schedules[i](t - m_{i-1})` for `m_{i-1} <= t < m_i` (`m_{-1} = 0`), the milestones in
    optimizer steps, or in epochs with `steps_per_epoch` (then each milestone is `m * steps_per_epoch`
    steps; the schedules still receive optimizer steps). The one combinator: it takes no peak itself.
    `optax.join_schedules` is the same function.

    Args:
      schedules: `k >= 1` schedules (each `step -> lr`).
      milestones: `k - 1` increasing ints `>= 1`.
      steps_per_epoch: count the milestones in epochs of this many steps.
    Returns: an `optax.Schedule`.
    Raises: `TypeError` for a non-callable schedule or a non-int milestone; `ValueError` for a
      wrong number of milestones or milestones not increasing.

    PyTorch: `SequentialLR(opt, schedulers=[...], milestones=[...])`.
    """
    fn = "schedules.sequential"
    schedules = list(schedules)
    for i, s in enumerate(schedules):
        if not callable(s):
            raise TypeError(f"{fn}: schedules[{i}] must be a schedule (step -> lr), got {type(s).__name__}.")
    milestones = [check_positive_int(fn, f"milestones[{i}]", m) for i, m in enumerate(milestones)]
    if len(schedules) < 1 or len(milestones) != len(schedules) - 1:
        raise ValueError(f"{fn}: expected one milestone fewer than schedules, got {len(schedules)} schedules and "
                         f"{len(milestones)} milestones.")
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"{fn}: milestones must be strictly increasing, got {milestones}.")
    bounds = [m * (steps_per_epoch or 1) for m in milestones]
    _spe(fn, steps_per_epoch)

    def schedule(step):
        step = jnp.asarray(step)
        lr = schedules[0](step)
        for bound, s in zip(bounds, schedules[1:], strict=True):
            lr = jnp.where(step < bound, lr, s(step - bound))
        return lr

    return _promotion_safe(schedule)


# ----------------------------------------------------------------------------------------------
# schedules per epoch: peak * factor(epoch), torch's LambdaLR
# ----------------------------------------------------------------------------------------------
def per_epoch(peak=_MISSING, /, fn=_MISSING, *, steps_per_epoch: int, **deprecated) -> optax.Schedule:
    """`lr = peak * fn(epoch)` with `epoch = step // steps_per_epoch`: a lambda schedule per epoch.

    `fn` receives the epoch as an int32 array (traced under `jit`), so it must use `jnp`
    operations and no Python `if` on its argument: write `jnp.where(e < 10, 1.0, 0.1)`, not
    `1.0 if e < 10 else 0.1`; arithmetic such as `0.95 ** e` or `1 / (1 + e)` works as is.

    PyTorch: `LambdaLR(opt, lr_lambda=fn)` with `lr=peak`, `scheduler.step()` once per epoch.

    Args:
      peak: the base learning rate multiplied by `fn` (torch's `lr`), `>= 0`; may be an array.
      fn: the factor as a function of the epoch (0 during the first epoch).
      steps_per_epoch: optimizer steps per epoch, an int `>= 1`.
    Returns: an `optax.Schedule`.
    Raises: `TypeError` if `fn` is not callable; `ValueError`/`TypeError` for bad numbers.
    Deprecated: `per_epoch(fn, ..., peak=1.0)` warns; it goes next release.
    """
    name = "schedules.per_epoch"
    peak, fn = _peak_first(name, "fn", peak, fn, deprecated)
    if not callable(fn):
        raise TypeError(f"{name}: fn must be a callable epoch -> factor, got {type(fn).__name__} {fn!r}.")
    return _times_factor(name, peak, fn, steps_per_epoch)


def _times_factor(name: str, peak, factor: Callable, steps_per_epoch) -> optax.Schedule:
    steps_per_epoch = check_positive_int(name, "steps_per_epoch", steps_per_epoch)
    peak = _real(name, "peak", peak, minimum=0.0)

    def schedule(step):
        return peak * jnp.asarray(factor(_epoch(step, steps_per_epoch)), dtype=float)

    return _promotion_safe(schedule)


def exponential(peak=_MISSING, /, gamma=_MISSING, *, steps_per_epoch: int, **deprecated) -> optax.Schedule:
    """`lr = peak * gamma ** epoch`, `epoch = step // steps_per_epoch`: constant inside an epoch.

    PyTorch: `ExponentialLR(opt, gamma)` with `lr=peak`, `scheduler.step()` once per epoch.

    Args:
      peak: learning rate of the first epoch (torch's `lr`), `>= 0`; may be an array.
      gamma: multiplicative factor per epoch, `> 0`.
      steps_per_epoch: optimizer steps per epoch, an int `>= 1`.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    Deprecated: `exponential(gamma, ..., peak=1.0)` warns; it goes next release.
    """
    name = "schedules.exponential"
    peak, gamma = _peak_first(name, "gamma", peak, gamma, deprecated)
    gamma = check_real(name, "gamma", gamma, minimum=0.0, min_inclusive=False)
    return _times_factor(name, peak, lambda e: _integer_power(gamma, e), steps_per_epoch)


def step_decay(peak=_MISSING, /, step_size=_MISSING, *, gamma: float = 0.1, steps_per_epoch: int,
               **deprecated) -> optax.Schedule:
    """`lr = peak * gamma ** (epoch // step_size)`: multiply by `gamma` every `step_size` epochs.

    PyTorch: `StepLR(opt, step_size, gamma=0.1)` with `lr=peak`, `scheduler.step()` once per epoch.

    Args:
      peak: learning rate of the first epochs (torch's `lr`), `>= 0`; may be an array.
      step_size: epochs between decays, an int `>= 1`.
      gamma: multiplicative factor per decay, `> 0`.
      steps_per_epoch: optimizer steps per epoch, an int `>= 1`.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    Deprecated: `step_decay(step_size, ..., peak=1.0)` warns; it goes next release.
    """
    name = "schedules.step_decay"
    peak, step_size = _peak_first(name, "step_size", peak, step_size, deprecated)
    step_size = check_positive_int(name, "step_size", step_size)
    gamma = check_real(name, "gamma", gamma, minimum=0.0, min_inclusive=False)
    return _times_factor(name, peak, lambda e: _integer_power(gamma, e // step_size), steps_per_epoch)


def multistep(peak: float, milestones: Sequence[int], *, gamma: float = 0.1,
              steps_per_epoch: int) -> optax.Schedule:
    """`lr = peak * gamma ** n(epoch)`, `n` the number of milestones `<= epoch`.

    PyTorch: `MultiStepLR(opt, milestones, gamma=0.1)` with `lr=peak`, `scheduler.step()` once per
    epoch (`steps_per_epoch=1` when torch steps it per batch).

    Args:
      peak: torch's `lr`, `>= 0`; may be an array.
      milestones: epochs at which the rate is multiplied by `gamma`, ints `>= 1` (repeats multiply
        again, as in torch's `Counter`).
      gamma: `> 0`. steps_per_epoch: optimizer steps per epoch, an int `>= 1`.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    """
    name = "schedules.multistep"
    milestones = sorted(check_positive_int(name, f"milestones[{i}]", m) for i, m in enumerate(milestones))
    gamma = check_real(name, "gamma", gamma, minimum=0.0, min_inclusive=False)
    marks = jnp.asarray(milestones or [2**31 - 1], jnp.int32)

    def factor(e):
        n = jnp.sum(e[..., None] >= marks, axis=-1) if milestones else jnp.zeros_like(e)
        return _integer_power(gamma, n)

    return _times_factor(name, peak, factor, steps_per_epoch)


def inverse_time(peak=_MISSING, /, decay_rate=_MISSING, *, steps_per_epoch: int, **deprecated) -> optax.Schedule:
    """`lr = peak / (1 + decay_rate * epoch)`, `epoch = step // steps_per_epoch`.

    PyTorch: `LambdaLR(opt, lr_lambda=lambda e: 1 / (1 + decay_rate * e))` with `lr=peak`, stepped
    once per epoch (torch has no dedicated class). Keras' `InverseTimeDecay(staircase=True)` with
    `decay_steps=steps_per_epoch` is the same schedule.

    Args:
      peak: learning rate of the first epoch (torch's `lr`), `>= 0`; may be an array.
      decay_rate: `>= 0`; the rate halves after `1 / decay_rate` epochs.
      steps_per_epoch: optimizer steps per epoch, an int `>= 1`.
    Returns: an `optax.Schedule`.
    Raises: `ValueError`/`TypeError` for arguments outside the ranges above.
    Deprecated: `inverse_time(decay_rate, ..., peak=1.0)` warns; it goes next release.
    """
    name = "schedules.inverse_time"
    peak, decay_rate = _peak_first(name, "decay_rate", peak, decay_rate, deprecated)
    decay_rate = check_real(name, "decay_rate", decay_rate, minimum=0.0)
    return _times_factor(name, peak, lambda e: 1.0 / (1.0 + decay_rate * e), steps_per_epoch)
