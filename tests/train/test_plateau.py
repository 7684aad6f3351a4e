"""jaxnets.train.plateau against torch.optim.lr_scheduler.ReduceLROnPlateau."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from jaxnets import train
from jaxnets.train import ReduceLROnPlateau, ScaleByPlateauState

# a metric that improves, stalls, wobbles within the threshold, improves again, and gets worse
METRICS = [1.0, 0.8, 0.7, 0.7, 0.70001, 0.71, 0.69, 0.69, 0.6999, 0.5, 0.5, 0.5, 0.5, 0.51, 0.52, 0.4, 0.4, 0.4,
           0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.39, 0.4, 0.4, 0.4, 0.4]

OPTIONS = [dict(patience=5), dict(patience=2), dict(patience=1, factor=0.5, cooldown=2),
           dict(patience=0, threshold=0.05),
           dict(patience=1, threshold=0.05, threshold_mode="abs", factor=0.3, min_lr=0.005),
           dict(mode="max", patience=1, factor=0.5), dict(mode="max", patience=2, threshold_mode="abs", cooldown=1),
           dict(patience=0, factor=0.9, eps=0.002)]


def torch_rates(metrics, **options):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    rates = []
    for m in metrics:
        scheduler.step(m)
        rates.append(opt.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize("options", OPTIONS)
def test_rates_match_torch(options):
    metrics = [-m for m in METRICS] if options.get("mode") == "max" else METRICS
    plateau = ReduceLROnPlateau(0.1, **options)
    ours = []
    for m in metrics:
        plateau.step(m)
        ours.append(plateau.learning_rate)
    expected = torch_rates(metrics, **options)
    assert ours == expected  # the same float64 arithmetic: equal exactly
    assert len(set(expected)) > 1  # the rate is reduced at least once in every case


def test_state_dict_resumes_the_same_decisions():
    full = ReduceLROnPlateau(0.1, patience=1, cooldown=1)
    for m in METRICS:
        full.step(m)
    first = ReduceLROnPlateau(0.1, patience=1, cooldown=1)
    for m in METRICS[:11]:
        first.step(m)
    saved = first.state_dict()
    resumed = ReduceLROnPlateau(0.1, patience=1, cooldown=1)
    resumed.load_state_dict(saved)
    for m in METRICS[11:]:
        resumed.step(m)
    assert resumed.state_dict() == full.state_dict()
    assert resumed.step(jnp.float32(0.1)) is False  # a jax scalar metric is accepted
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau.load_state_dict: missing keys \['best'"):
        resumed.load_state_dict({"learning_rate": 0.1})


def test_apply_changes_the_rate_without_recompiling():
    plateau = ReduceLROnPlateau(0.1, patience=0, factor=0.5)
    tx = optax.chain(train.sgd(0.1, momentum=0.9), plateau.transform())
    params = {"w": jnp.ones((3,))}
    update = jax.jit(tx.update)
    grads = {"w": jnp.full((3,), 2.0)}
    state = tx.init(params)
    for expected in (-0.2, -0.1 * (0.9 * 2.0 + 2.0)):  # two steps: the state as a train loop holds it
        u, state = update(grads, state, params)
        np.testing.assert_allclose(u["w"], expected, rtol=1e-6)
    compiled = update._cache_size()
    plateau.step(1.0)
    plateau.step(2.0)  # worse, patience 0: halve
    assert plateau.scale == 0.5
    sharding = state[-1].scale.sharding
    state = plateau.apply(state)
    assert state[-1].scale.sharding == sharding and float(state[-1].scale) == 0.5
    u, state = update(grads, state, params)
    np.testing.assert_allclose(u["w"], -0.5 * 0.1 * (0.9 * 3.8 + 2.0), rtol=1e-6)  # buffer unscaled, as torch
    assert update._cache_size() == compiled  # the same program: the rate is data in the state
    assert isinstance(state[-1], ScaleByPlateauState)
    # a state placed on devices (committed, as jaxnets.train.parallel places it) keeps its placement
    placed = jax.device_put(state, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    _, placed = update(grads, placed, params)
    compiled = update._cache_size()
    plateau.step(3.0)
    placed = plateau.apply(placed)
    assert placed[-1].scale.committed and float(placed[-1].scale) == 0.25
    update(grads, placed, params)
    assert update._cache_size() == compiled
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau.apply: the optimizer state has no ScaleByPlateauState"):
        plateau.apply(train.sgd(0.1).init(params))


def test_trajectory_matches_torch():
    """SGD with momentum and weight decay, one step per epoch on a quadratic, the loss as the metric."""
    target = np.array([1.0, -2.0, 0.5], np.float32)
    options = dict(patience=1, factor=0.5, threshold=0.1)
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.3, momentum=0.9, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **options)
    plateau = ReduceLROnPlateau(0.3, **options)
    tx = optax.chain(train.sgd(0.3, momentum=0.9, weight_decay=0.01), plateau.transform())
    params = jnp.zeros(3)
    state = tx.init(params)
    loss = lambda w: jnp.sum((w - target) ** 2)  # noqa: E731
    step = jax.jit(lambda w, s: tx.update(jax.grad(loss)(w), s, w))
    reductions = 0
    for _ in range(25):
        opt.zero_grad()
        torch_loss = torch.sum((p - torch.from_numpy(target)) ** 2)
        torch_loss.backward()
        opt.step()
        scheduler.step(float(torch_loss.detach()))
        metric = loss(params)
        u, state = step(params, state)
        params = optax.apply_updates(params, u)
        reductions += plateau.step(metric)
        state = plateau.apply(state)
        np.testing.assert_allclose(params, p.detach().numpy(), rtol=1e-5, atol=1e-6)
        assert plateau.learning_rate == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert reductions >= 2


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(learning_rate=0.0), ValueError, r"ReduceLROnPlateau: learning_rate must be a finite real number > 0.0"),
    (dict(mode="minimum"), ValueError, r"ReduceLROnPlateau: unknown mode 'minimum'; expected one of \('min', 'max'\)"),
    (dict(factor=1.0), ValueError, r"ReduceLROnPlateau: factor must be a finite real number in \[0.0, 1.0\)"),
    (dict(patience=1.5), TypeError, r"ReduceLROnPlateau: patience must be an int >= 0, got float"),
    (dict(threshold_mode="relative"), ValueError, r"unknown threshold_mode 'relative'"),
    (dict(cooldown=-1), ValueError, r"cooldown must be an int >= 0, got -1"),
    (dict(min_lr=-1e-3), ValueError, r"min_lr must be a finite real number >= 0.0"),
    (dict(eps=True), TypeError, r"eps must be a real number >= 0.0, got bool"),
])
def test_bad_arguments(kwargs, error, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        ReduceLROnPlateau(kwargs.pop("learning_rate"), **kwargs)


def test_bad_metric():
    with pytest.raises(TypeError, match=r"ReduceLROnPlateau.step: metric must be a real number .*got str"):
        ReduceLROnPlateau(0.1).step("low")
