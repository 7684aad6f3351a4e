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
    "exponential": (schedules.exponential(0.9, steps_per_epoch=SPE, peak=0.1),
                    lambda o: LR.ExponentialLR(o, gamma=0.9)),
    "exponential_growing": (schedules.exponential(1.2, steps_per_epoch=SPE, peak=0.1),
                            lambda o: LR.ExponentialLR(o, gamma=1.2)),
    "step_decay": (schedules.step_decay(7, gamma=0.5, steps_per_epoch=SPE, peak=0.1),
                   lambda o: LR.StepLR(o, step_size=7, gamma=0.5)),
    "step_decay_default_gamma": (schedules.step_decay(4, steps_per_epoch=SPE, peak=0.1),
                                 lambda o: LR.StepLR(o, step_size=4)),
    "inverse_time": (schedules.inverse_time(0.3, steps_per_epoch=SPE, peak=0.1),
                     lambda o: LR.LambdaLR(o, lambda e: 1 / (1 + 0.3 * e))),
    "per_epoch_jnp": (schedules.per_epoch(lambda e: jnp.where(e < 10, 1.0, 0.2) * 0.97 ** e,
                                          steps_per_epoch=SPE, peak=0.1),
                      lambda o: LR.LambdaLR(o, lambda e: (1.0 if e < 10 else 0.2) * 0.97 ** e)),
    "cosine_per_epoch": (schedules.cosine(0.1, EPOCHS, final=1e-3, steps_per_epoch=SPE),
                         lambda o: LR.CosineAnnealingLR(o, T_max=EPOCHS, eta_min=1e-3)),
    "warm_restarts_per_epoch": (schedules.warm_restarts(3, period_mult=2, final=1e-3, peak=0.1,
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
    "warm_restarts": (schedules.warm_restarts(7 * SPE, peak=0.1),
                      lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=7)),
    "warm_restarts_mult2": (schedules.warm_restarts(3 * SPE, period_mult=2, final=1e-3, peak=0.1),
                            lambda o: LR.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-3)),
    "warm_restarts_mult3": (schedules.warm_restarts(2 * SPE, period_mult=3, peak=0.1),
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
    schedule = schedules.warm_restarts(5, period_mult=2, final=0.0, peak=0.1)
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


def test_peak_defaults_to_the_factor():
    np.testing.assert_allclose(at_epochs(schedules.exponential(0.9, steps_per_epoch=1), 1),
                               0.9 ** np.arange(EPOCHS), rtol=1e-6)
    assert float(schedules.warm_restarts(10)(0)) == 1.0
    assert float(schedules.per_epoch(lambda e: 0.5 ** e, steps_per_epoch=2)(5)) == 0.25


def test_schedules_are_traceable():
    schedule = schedules.step_decay(3, steps_per_epoch=5, peak=1.0)
    grad = jax.grad(lambda s: schedule(jnp.int32(7)) * s)(1.0)  # inside a traced computation
    assert float(grad) == pytest.approx(1.0)
    rates = jax.vmap(schedules.warm_restarts(4, period_mult=2, peak=0.5))(jnp.arange(12))
    np.testing.assert_allclose(rates, [float(schedules.warm_restarts(4, period_mult=2, peak=0.5)(i))
                                       for i in range(12)], rtol=1e-6)


@pytest.mark.parametrize("make,error,match", [
    (lambda: schedules.cosine(-0.1, 10), ValueError, r"schedules.cosine: peak must be >= 0.0, got -0.1"),
    (lambda: schedules.cosine(0.1, 0), ValueError, r"schedules.cosine: total_steps must be an integer >= 1, got 0"),
    (lambda: schedules.cosine(0.1, 10.0), TypeError, r"schedules.cosine: total_steps must be an integer, got float"),
    (lambda: schedules.cosine(0.1, 10, warmup_steps=10), ValueError,
     r"warmup_steps must be smaller than total_steps, got warmup_steps=10 and total_steps=10"),
    (lambda: schedules.cosine(0.1, 10, final=-1.0), ValueError, r"final must be >= 0.0"),
    (lambda: schedules.cosine(0.1, 10, steps_per_epoch=0), ValueError, r"steps_per_epoch must be an integer >= 1"),
    (lambda: schedules.warm_restarts(0), ValueError, r"schedules.warm_restarts: period must be an integer >= 1"),
    (lambda: schedules.warm_restarts(5, period_mult=1.5), TypeError, r"period_mult must be an integer, got float"),
    (lambda: schedules.warm_restarts(5, peak=float("inf")), ValueError, r"peak must be >= 0.0, got inf"),
    (lambda: schedules.exponential(0.0, steps_per_epoch=1), ValueError,
     r"schedules.exponential: gamma must be > 0.0, got 0.0"),
    (lambda: schedules.exponential(0.9, steps_per_epoch=0), ValueError,
     r"steps_per_epoch must be an integer >= 1, got 0"),
    (lambda: schedules.exponential(0.9, steps_per_epoch=True), TypeError,
     r"steps_per_epoch must be an integer, got bool"),
    (lambda: schedules.step_decay(0, steps_per_epoch=1), ValueError,
     r"schedules.step_decay: step_size must be an integer >= 1"),
    (lambda: schedules.step_decay(2, gamma=-0.1, steps_per_epoch=1), ValueError, r"gamma must be > 0.0"),
    (lambda: schedules.inverse_time(-0.5, steps_per_epoch=1), ValueError,
     r"schedules.inverse_time: decay_rate must be >= 0.0, got -0.5"),
    (lambda: schedules.per_epoch(0.5, steps_per_epoch=1), TypeError, r"schedules.per_epoch: fn must be a callable"),
    (lambda: schedules.per_epoch(lambda e: e, steps_per_epoch=1, peak="1"), TypeError,
     r"schedules.per_epoch: peak must be a real number, got str"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()
