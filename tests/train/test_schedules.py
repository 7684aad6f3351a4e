"""jaxnets.train.schedules against torch.optim.lr_scheduler, at every epoch boundary.

Torch's learning rate for epoch e is read from the optimizer after e calls of ``scheduler.step()``;
ours is ``schedule(e * steps_per_epoch)`` (the first optimizer step of that epoch). Tolerance: rtol 1e-6,
atol 0 (ours is float32, torch float64; the cosine is computed in a form that keeps full relative
precision near its minimum, and integer powers by repeated squaring). Trajectories of an optimizer
driven by a schedule are compared in tests/train/test_optim.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from _tolerances import SCALAR
from jaxnets.train import schedules

TOL = SCALAR
EPOCHS = 30
SPE = 4  # optimizer steps per epoch


def torch_rates(make_scheduler, epochs=EPOCHS, lr=0.1):
    """The learning rate torch uses during each of `epochs` epochs (scheduler.step() once per epoch)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(rates)


def at_epochs(schedule, steps_per_epoch=SPE, epochs=EPOCHS):
    """Our rate at the first step of each epoch, all epochs at once under jit."""
    return np.asarray(jax.jit(schedule)(np.arange(epochs) * steps_per_epoch))


LR = torch.optim.lr_scheduler
PER_EPOCH = {  # ours, torch's scheduler: both stepped per epoch, constant inside an epoch
    "exponential": (schedules.exponential(0.1, 0.9, steps_per_epoch=SPE),
                    lambda o: LR.ExponentialLR(o, gamma=0.9)),
    "exponential_growing": (schedules.exponential(0.1, 1.2, steps_per_epoch=SPE),
                            lambda o: LR.ExponentialLR(o, gamma=1.2)),
    "step_decay": (schedules.step_decay(0.1, 7, gamma=0.5, steps_per_epoch=SPE),
                   lambda o: LR.StepLR(o, step_size=7, gamma=0.5)),
    "step_decay_default_gamma": (schedules.step_decay(0.1, 4, steps_per_epoch=SPE),
                                 lambda o: LR.StepLR(o, step_size=4)),
    "inverse_time": (schedules.inverse_time(0.1, 0.3, steps_per_epoch=SPE),
                     lambda o: LR.LambdaLR(o, lambda e: 1 / (1 + 0.3 * e))),
    "per_epoch_jnp": (schedules.per_epoch(0.1, lambda e: jnp.where(e < 10, 1.0, 0.2) * 0.97 ** e,
                                          steps_per_epoch=SPE),
                      lambda o: LR.LambdaLR(o, lambda e: (1.0 if e < 10 else 0.2) * 0.97 ** e)),
    "cosine_per_epoch": (schedules.cosine(0.1, EPOCHS, final=1e-3, steps_per_epoch=SPE),
                         lambda o: LR.CosineAnnealingLR(o, T_max=EPOCHS, eta_min=1e-3)),
    "warm_restarts_per_epoch": (schedules.warm_restarts(0.1, 3, period_mult=2, final=1e-3,
                                                        steps_per_epoch=SPE),
                                lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)),
}


@pytest.mark.parametrize("case", list(PER_EPOCH))
def test_per_epoch_schedules_match_torch(case):
    ours, make = PER_EPOCH[case]
    expected = torch_rates(make)
    steps = np.arange(EPOCHS * SPE)
    rates = np.asarray(jax.jit(ours)(steps))  # every step, under jit, vectorised
    np.testing.assert_allclose(rates[::SPE], expected, **TOL)
    np.testing.assert_array_equal(rates.reshape(EPOCHS, SPE), rates[::SPE, None].repeat(SPE, 1))  # flat epochs
    for e in (0, 1, EPOCHS - 1):  # unjitted, one Python int at a time
        np.testing.assert_allclose(float(ours(e * SPE + SPE - 1)), expected[e], **TOL)
    assert len(set(expected.tolist())) > 3  # the schedule does change over these epochs


STEPWISE = {  # ours counted in steps, torch stepped per epoch: equal at every epoch boundary
    "cosine": (schedules.cosine(0.1, EPOCHS * SPE), lambda o: LR.CosineAnnealingLR(o, T_max=EPOCHS)),
    "cosine_final": (schedules.cosine(0.1, EPOCHS * SPE, final=0.01),
                     lambda o: LR.CosineAnnealingLR(o, T_max=EPOCHS, eta_min=0.01)),
    "warm_restarts": (schedules.warm_restarts(0.1, 7 * SPE),
                      lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=7)),
    "warm_restarts_mult2": (schedules.warm_restarts(0.1, 3 * SPE, period_mult=2, final=1e-3),
                            lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)),
    "warm_restarts_mult3": (schedules.warm_restarts(0.1, 2 * SPE, period_mult=3),
                            lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=3)),
}


@pytest.mark.parametrize("case", list(STEPWISE))
def test_step_schedules_match_torch_at_epoch_boundaries(case):
    ours, make = STEPWISE[case]
    np.testing.assert_allclose(at_epochs(ours), torch_rates(make), **TOL)


@pytest.mark.parametrize("case", ["cosine", "warm_restarts_mult2"])
def test_step_schedules_match_torch_stepped_every_step(case):
    """The same schedules with torch's scheduler.step() after every optimizer step (T in steps)."""
    ours, make = STEPWISE[case]
    expected = torch_rates(make_scheduler=lambda o: {
        "cosine": LR.CosineAnnealingLR(o, T_max=EPOCHS * SPE),
        "warm_restarts_mult2": LR.CosineAnnealingWarmRestarts(o, T_0=3 * SPE, T_mult=2, eta_min=1e-3),
    }[case], epochs=EPOCHS * SPE)
    np.testing.assert_allclose(np.asarray(jax.jit(ours)(np.arange(EPOCHS * SPE))), expected, **TOL)


def test_warm_restarts_restart_exactly():
    """Restarts found by integer comparison: peak exactly at each cycle start, even late ones."""
    schedule = schedules.warm_restarts(0.1, 5, period_mult=2, final=0.0)
    starts = np.array([5 * (2**n - 1) for n in range(25)])  # up to 8.4e7 steps
    np.testing.assert_array_equal(np.asarray(jax.jit(schedule)(starts)), np.float32(0.1))
    before = np.asarray(schedule(starts[1:] - 1))
    lengths = 5 * 2.0 ** np.arange(24)
    np.testing.assert_allclose(before, 0.1 * np.sin(np.pi / 2 / lengths) ** 2, rtol=1e-5)


def test_cosine_warmup():
    peak, total, warmup, final = 0.1, 50, 10, 0.01
    schedule = schedules.cosine(peak, total, final=final, warmup_steps=warmup)
    t = np.arange(70)
    decay = np.clip(t - warmup, 0, total - warmup) / (total - warmup)
    expected = np.where(t < warmup, peak * t / warmup, final + (peak - final) * (1 + np.cos(np.pi * decay)) / 2)
    rates = np.asarray(jax.jit(schedule)(t))
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-9)  # atol: the exact 0 at step 0
    with jax.numpy_dtype_promotion("standard"):  # optax's schedule relies on implicit promotion
        optax_rates = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, final)(t)
    np.testing.assert_allclose(rates, optax_rates, rtol=1e-5)  # optax's float32 1 + cos loses digits
    assert rates[0] == 0.0 and rates[warmup] == np.float32(peak) and np.all(rates[total:] == np.float32(final))


def test_cosine_stays_at_final_after_total_steps():
    schedule = schedules.cosine(0.1, 20, final=0.002)
    np.testing.assert_array_equal(np.asarray(schedule(np.array([20, 21, 40, 10**6]))), np.float32(0.002))


def test_cosine_keeps_relative_precision_near_its_minimum():
    """1 + cos(pi t / T) in float32 would be off by ~1e-5 relative at t = T - 1; ours is within 1e-6."""
    total = 1000
    t = np.arange(total - 20, total)
    expected = 0.1 * (1 + np.cos(np.pi * t / total)) / 2
    np.testing.assert_allclose(np.asarray(schedules.cosine(0.1, total)(t)), expected, rtol=1e-6)


@pytest.mark.parametrize("old,new", [
    (lambda: schedules.exponential(0.9, steps_per_epoch=2, peak=0.1),
     lambda: schedules.exponential(0.1, 0.9, steps_per_epoch=2)),
    (lambda: schedules.exponential(0.9, steps_per_epoch=2), lambda: schedules.exponential(1.0, 0.9, steps_per_epoch=2)),
    (lambda: schedules.exponential(gamma=0.9, steps_per_epoch=2, peak=0.1),
     lambda: schedules.exponential(0.1, gamma=0.9, steps_per_epoch=2)),
    (lambda: schedules.step_decay(3, gamma=0.5, steps_per_epoch=2, peak=0.1),
     lambda: schedules.step_decay(0.1, 3, gamma=0.5, steps_per_epoch=2)),
    (lambda: schedules.inverse_time(0.5, steps_per_epoch=2, peak=0.1),
     lambda: schedules.inverse_time(0.1, 0.5, steps_per_epoch=2)),
    (lambda: schedules.per_epoch(lambda e: 0.5 ** e, steps_per_epoch=2, peak=0.1),
     lambda: schedules.per_epoch(0.1, lambda e: 0.5 ** e, steps_per_epoch=2)),
    (lambda: schedules.warm_restarts(10, peak=0.1), lambda: schedules.warm_restarts(0.1, 10)),
    (lambda: schedules.warm_restarts(10), lambda: schedules.warm_restarts(1.0, 10)),
])
def test_old_call_forms_warn_and_give_the_same_schedule(old, new):
    with pytest.warns(DeprecationWarning, match=r"is deprecated and will be removed in the next release; call "
                                                r"schedules\.\w+\(p, \w+, \.\.\.\): every schedule takes the peak"):
        old_schedule = old()
    steps = np.arange(40)
    np.testing.assert_array_equal(np.asarray(old_schedule(steps)), np.asarray(new()(steps)))


def test_peak_twice_is_an_error():
    with pytest.raises(TypeError, match=r"schedules.exponential: the peak learning rate was given twice"):
        schedules.exponential(0.1, 0.9, steps_per_epoch=2, peak=0.1)
    with pytest.raises(TypeError, match=r"schedules.step_decay: unexpected keyword argument 'gama'"):
        schedules.step_decay(0.1, 2, gama=0.5, steps_per_epoch=2)
    with pytest.raises(TypeError, match=r"schedules.inverse_time: missing the arguments peak and decay_rate"):
        schedules.inverse_time(steps_per_epoch=2)


def test_schedules_are_traceable():
    schedule = schedules.step_decay(1.0, 3, steps_per_epoch=5)
    grad = jax.grad(lambda s: schedule(jnp.int32(7)) * s)(1.0)  # inside a traced computation
    assert float(grad) == pytest.approx(1.0)
    rates = jax.vmap(schedules.warm_restarts(0.5, 4, period_mult=2))(jnp.arange(12))
    np.testing.assert_allclose(rates, [float(schedules.warm_restarts(0.5, 4, period_mult=2)(i))
                                       for i in range(12)], rtol=1e-6)


@pytest.mark.parametrize("make,error,match", [
    (lambda: schedules.cosine(-0.1, 10), ValueError,
     r"schedules.cosine: peak must be a finite real number >= 0.0, got -0.1"),
    (lambda: schedules.cosine(0.1, 0), ValueError, r"schedules.cosine: total_steps must be an int >= 1, got 0"),
    (lambda: schedules.cosine(0.1, 10.0), TypeError, r"schedules.cosine: total_steps must be an int >= 1, got float"),
    (lambda: schedules.cosine(0.1, 10, warmup_steps=10), ValueError,
     r"warmup_steps must be smaller than total_steps, got warmup_steps=10 and total_steps=10"),
    (lambda: schedules.cosine(0.1, 10, final=-1.0), ValueError, r"final must be a finite real number >= 0.0"),
    (lambda: schedules.cosine(0.1, 10, steps_per_epoch=0), ValueError, r"steps_per_epoch must be an int >= 1"),
    (lambda: schedules.cosine(jnp.array([0.1, -0.1]), 10), ValueError, r"peak must be a finite real number >= 0.0 "
                                                                        r"\(every element of the array\)"),
    (lambda: schedules.warm_restarts(0.1, 0), ValueError, r"schedules.warm_restarts: period must be an int >= 1"),
    (lambda: schedules.warm_restarts(0.1, 5, period_mult=1.5), TypeError,
     r"period_mult must be an int >= 1, got float"),
    (lambda: schedules.warm_restarts(float("inf"), 5), ValueError,
     r"peak must be a finite real number >= 0.0, got inf"),
    (lambda: schedules.exponential(0.1, 0.0, steps_per_epoch=1), ValueError,
     r"schedules.exponential: gamma must be a finite real number > 0.0, got 0.0"),
    (lambda: schedules.exponential(0.1, 0.9, steps_per_epoch=0), ValueError,
     r"steps_per_epoch must be an int >= 1, got 0"),
    (lambda: schedules.exponential(0.1, 0.9, steps_per_epoch=True), TypeError,
     r"steps_per_epoch must be an int >= 1, got bool"),
    (lambda: schedules.step_decay(0.1, 0, steps_per_epoch=1), ValueError,
     r"schedules.step_decay: step_size must be an int >= 1"),
    (lambda: schedules.step_decay(0.1, 2, gamma=-0.1, steps_per_epoch=1), ValueError,
     r"gamma must be a finite real number > 0.0"),
    (lambda: schedules.inverse_time(0.1, -0.5, steps_per_epoch=1), ValueError,
     r"schedules.inverse_time: decay_rate must be a finite real number >= 0.0, got -0.5"),
    (lambda: schedules.per_epoch(0.1, 0.5, steps_per_epoch=1), TypeError,
     r"schedules.per_epoch: fn must be a callable"),
    (lambda: schedules.per_epoch("1", lambda e: e, steps_per_epoch=1), TypeError,
     r"schedules.per_epoch: peak must be a real number >= 0.0, got str"),
    (lambda: schedules.cosine_annealing(0.1, 0), ValueError, r"schedules.cosine_annealing: t_max must be an int >= 1"),
    (lambda: schedules.cosine_annealing(0.1, 5, eta_min=-1.0), ValueError, r"eta_min must be a finite real number"),
    (lambda: schedules.linear(0.1, start_factor=0.0), ValueError,
     r"schedules.linear: start_factor must be a finite real number in \(0.0, 1.0\], got 0.0"),
    (lambda: schedules.linear(0.1, end_factor=1.5), ValueError, r"schedules.linear: end_factor must be"),
    (lambda: schedules.linear(0.1, total_iters=0), ValueError, r"schedules.linear: total_iters must be an int >= 1"),
    (lambda: schedules.one_cycle(0.1, 1), ValueError, r"schedules.one_cycle: total_steps must be an int >= 2, got 1"),
    (lambda: schedules.one_cycle(0.1, 10, pct_start=1.0), ValueError, r"pct_start must be a finite real number in"),
    (lambda: schedules.one_cycle(0.1, 10, anneal_strategy="exp"), ValueError,
     r"schedules.one_cycle: unknown anneal_strategy 'exp'; expected one of \('cos', 'linear'\)"),
    (lambda: schedules.one_cycle(0.1, 10, div_factor=0), ValueError, r"div_factor must be a finite real number > 0.0"),
    (lambda: schedules.one_cycle(0.1, 10, three_phase=1), TypeError, r"three_phase must be a Python bool"),
    (lambda: schedules.multistep(0.1, [2, 0], steps_per_epoch=1), ValueError,
     r"schedules.multistep: milestones\[1\] must be an int >= 1, got 0"),
    (lambda: schedules.multistep(0.1, [2.5], steps_per_epoch=1), TypeError, r"milestones\[0\] must be an int"),
    (lambda: schedules.sequential([schedules.linear(0.1)], [3]), ValueError,
     r"schedules.sequential: expected one milestone fewer than schedules, got 1 schedules and 1 milestones"),
    (lambda: schedules.sequential([schedules.linear(0.1), 0.1], [3]), TypeError,
     r"schedules.sequential: schedules\[1\] must be a schedule"),
    (lambda: schedules.sequential([schedules.linear(0.1)] * 3, [3, 3]), ValueError,
     r"milestones must be strictly increasing, got \[3, 3\]"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


# ---------------------------------------------------------------------------------------------
# torch's MultiStepLR, LinearLR, CosineAnnealingLR past T_max, OneCycleLR, SequentialLR
# ---------------------------------------------------------------------------------------------
NEW = {  # ours at the first step of each epoch, torch stepped once per epoch
    "multistep": (lambda: schedules.multistep(0.1, [3, 8, 8, 20], gamma=0.5, steps_per_epoch=SPE),
                  lambda o: LR.MultiStepLR(o, milestones=[3, 8, 8, 20], gamma=0.5)),
    "linear_default": (lambda: schedules.linear(0.1, steps_per_epoch=SPE), lambda o: LR.LinearLR(o)),
    "linear_decay": (lambda: schedules.linear(0.1, start_factor=1.0, end_factor=0.1, total_iters=12,
                                              steps_per_epoch=SPE),
                     lambda o: LR.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=12)),
    "cosine_annealing_past_t_max": (lambda: schedules.cosine_annealing(0.1, 8, eta_min=1e-3, steps_per_epoch=SPE),
                                    lambda o: LR.CosineAnnealingLR(o, T_max=8, eta_min=1e-3)),
    "lambda": (lambda: schedules.per_epoch(0.1, lambda e: 0.9 ** e + 1.0 / (1.0 + e), steps_per_epoch=SPE),
               lambda o: LR.LambdaLR(o, lambda e: 0.9 ** e + 1.0 / (1.0 + e))),
    "sequential_warmup_cosine": (
        lambda: schedules.sequential([schedules.linear(0.1, start_factor=0.1, total_iters=5, steps_per_epoch=SPE),
                                      schedules.cosine_annealing(0.1, 10, steps_per_epoch=SPE)], [5],
                                     steps_per_epoch=SPE),
        lambda o: LR.SequentialLR(o, [LR.LinearLR(o, start_factor=0.1, total_iters=5), LR.CosineAnnealingLR(o, 10)],
                                  milestones=[5])),
    "sequential_three": (
        lambda: schedules.sequential([schedules.linear(0.1, start_factor=0.5, total_iters=3, steps_per_epoch=SPE),
                                      schedules.exponential(0.1, 0.8, steps_per_epoch=SPE),
                                      schedules.multistep(0.1, [2, 4], steps_per_epoch=SPE)], [4, 12],
                                     steps_per_epoch=SPE),
        lambda o: LR.SequentialLR(o, [LR.LinearLR(o, start_factor=0.5, total_iters=3), LR.ExponentialLR(o, 0.8),
                                      LR.MultiStepLR(o, [2, 4])], milestones=[4, 12])),
}


@pytest.mark.parametrize("case", list(NEW))
def test_new_schedules_match_torch(case):
    make, make_torch = NEW[case]
    expected = torch_rates(make_torch)
    rates = np.asarray(jax.jit(make())(np.arange(EPOCHS * SPE)))
    np.testing.assert_allclose(rates[::SPE], expected, **TOL)
    np.testing.assert_array_equal(rates.reshape(EPOCHS, SPE), rates[::SPE, None].repeat(SPE, 1))
    assert len(set(expected.tolist())) > 3


def test_cosine_annealing_climbs_back_where_cosine_stays():
    t = np.arange(0, 40)
    ours = np.asarray(schedules.cosine_annealing(0.1, 10)(t))
    np.testing.assert_allclose(ours, 0.1 * (1 + np.cos(np.pi * t / 10)) / 2, rtol=1e-6, atol=1e-9)
    assert ours[20] == np.float32(0.1) and ours[30] < 1e-9  # back at the peak at 2 T_max, then down again
    np.testing.assert_array_equal(np.asarray(schedules.cosine(0.1, 10)(t[10:])), 0.0)


def torch_one_cycle(steps, **options):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = LR.OneCycleLR(opt, total_steps=steps, cycle_momentum=False, **options)
    rates = []
    for i in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if i < steps - 1:
            scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize("options", [dict(), dict(anneal_strategy="linear"), dict(three_phase=True),
                                     dict(pct_start=0.45, div_factor=10.0, final_div_factor=100.0, three_phase=True,
                                          anneal_strategy="linear"),
                                     dict(pct_start=0.1)])
def test_one_cycle_matches_torch_per_step(options):
    steps = 57
    expected = torch_one_cycle(steps, max_lr=0.3, **options)
    ours = np.asarray(jax.jit(schedules.one_cycle(0.3, steps, **options))(np.arange(steps)))
    np.testing.assert_allclose(ours, expected, rtol=2e-6, atol=0)  # float32 cos of a float32 fraction


# ---------------------------------------------------------------------------------------------
# float64 under x64: torch's values to a few ulps
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


ALL_EPOCH_CASES = {**{k: (lambda v=v: v[0], v[1]) for k, v in PER_EPOCH.items()}, **NEW}
# torch's recursive forms (lr *= gamma; LinearLR's and CosineAnnealingLR's ratios) round once per epoch:
# after 30 epochs up to ~20 ulps (measured 4.8e-15 relative for CosineAnnealingLR past T_max) from the
# closed form, which is what we compute; torch's closed forms (LambdaLR, StepLR) agree to an ulp or two.
TOL64 = dict(rtol=1e-14, atol=1e-18)


@pytest.mark.parametrize("case", list(ALL_EPOCH_CASES))
def test_float64_schedules_match_torch(case, x64):
    make, make_torch = ALL_EPOCH_CASES[case]
    expected = torch_rates(make_torch)
    rates = np.asarray(jax.jit(make())(np.arange(EPOCHS * SPE)))
    assert rates.dtype == np.float64
    np.testing.assert_allclose(rates[::SPE], expected, **TOL64)


@pytest.mark.parametrize("options", [dict(), dict(three_phase=True, anneal_strategy="linear")])
def test_float64_one_cycle_matches_torch(options, x64):
    expected = torch_one_cycle(57, max_lr=0.3, **options)
    ours = np.asarray(jax.jit(schedules.one_cycle(0.3, 57, **options))(np.arange(57)))
    # jnp.cos vs math.cos (an ulp), XLA's fused multiply-add in (end - start) * pct + start: within 3e-16 of
    # max_lr in absolute terms (torch's own formula cancels near the minimum, so relative errors there grow)
    np.testing.assert_allclose(ours, expected, rtol=2e-15, atol=1e-16)


def test_float32_is_the_rounding_of_the_float64_value():
    """0.1 arrives as float32(0.1) and the float32 rates are within a few float32 roundings of torch's."""
    schedule = schedules.multistep(0.1, [2, 5], gamma=0.1, steps_per_epoch=1)
    rates = np.asarray(schedule(np.arange(8)))
    assert rates.dtype == np.float32 and rates[0] == np.float32(0.1)
    expected = torch_rates(lambda o: LR.MultiStepLR(o, [2, 5], gamma=0.1), epochs=8)
    np.testing.assert_allclose(rates, expected.astype(np.float32), rtol=3e-7)


# ---------------------------------------------------------------------------------------------
# a traced peak (a population of learning rates under jax.vmap)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda p: schedules.cosine(p, 20, warmup_steps=3),
    lambda p: schedules.cosine_annealing(p, 7),
    lambda p: schedules.warm_restarts(p, 5, period_mult=2),
    lambda p: schedules.exponential(p, 0.9, steps_per_epoch=2),
    lambda p: schedules.one_cycle(p, 30, three_phase=True),
    lambda p: schedules.multistep(p, [3, 6], steps_per_epoch=2),
], ids=["cosine", "cosine_annealing", "warm_restarts", "exponential", "one_cycle", "multistep"])
def test_traced_peak_under_vmap(make):
    peaks = jnp.array([0.01, 0.1, 0.3], jnp.float32)
    steps = jnp.arange(30)
    batched = jax.jit(jax.vmap(lambda p: make(p)(steps)))(peaks)
    for i, p in enumerate([0.01, 0.1, 0.3]):
        np.testing.assert_allclose(batched[i], np.asarray(make(p)(steps)), rtol=1e-6, atol=1e-12)
