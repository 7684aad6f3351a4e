"""jaxnets.train.optimizer against torch.optim: whole trajectories, step by step.

The problem: a tiny tanh MLP, mean squared error on fixed float32 data. Each side takes the gradient of
its own loss at its own parameters every step, so any difference in an update rule compounds over the
20 steps. Tolerance on every parameter at every step: rtol 1e-5, atol 1e-6 (float32 rounding), except
for the Adam family (adam, adamw, amsgrad), where atol is 1e-5 * lr * steps: Optax computes the bias
correction 1 - b2**t in float32, where 0.999 rounds to 0.99900001, so 1 - b2**t is 1.3e-5 too small
(relative) for every small t and each update is ~6e-6 (relative) smaller than torch's, which computes it
in float64. Each Adam update is about lr in size, so the drift is at most 1e-5 * lr per step (measured:
replacing Optax's bias correction by a float64-accurate one brings Adam within rtol 1e-5, atol 1e-6).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from _tolerances import FLOAT32_ELEMENTWISE
from jaxnets.train import optim as train_optim
from jaxnets.train import (no_bias_no_norm, optimizer, path_names, scale_by_torch_amsgrad,
                           schedules)

TOL = FLOAT32_ELEMENTWISE
STEPS = 20
ADAM_FAMILY = ("adam", "adamw", "amsgrad")


def adam_tol(lr, steps=STEPS):
    """Float32 bias correction in Optax: at most 1e-5 * lr of drift per step (see the module docstring)."""
    return dict(rtol=1e-5, atol=1e-5 * lr * steps)

_rng = np.random.default_rng(0)
X = _rng.normal(size=(8, 3)).astype(np.float32)
Y = _rng.normal(size=(8, 2)).astype(np.float32)
INIT = {"w1": _rng.normal(size=(3, 5)).astype(np.float32) * 0.7,
        "b1": _rng.normal(size=(5,)).astype(np.float32) * 0.1,
        "w2": _rng.normal(size=(5, 2)).astype(np.float32) * 0.7,
        "b2": _rng.normal(size=(2,)).astype(np.float32) * 0.1}
NAMES = tuple(INIT)


def loss_jax(p):
    h = jnp.tanh(X @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] + p["b2"] - Y) ** 2)


def loss_torch(p):
    h = torch.tanh(torch.from_numpy(X) @ p["w1"] + p["b1"])
    return torch.mean((h @ p["w2"] + p["b2"] - torch.from_numpy(Y)) ** 2)


def torch_trajectory(make_opt, steps=STEPS, *, clip=None, scheduler=None, steps_per_epoch=None):
    """Parameters after each step of a torch optimizer (optionally clipping, optionally scheduled)."""
    p = {k: torch.tensor(v, requires_grad=True) for k, v in INIT.items()}
    opt = make_opt(list(p.values()))
    sched = scheduler(opt) if scheduler is not None else None
    out = []
    for step in range(steps):
        opt.zero_grad()
        loss_torch(p).backward()
        if clip is not None:
            clip(list(p.values()))
        opt.step()
        if sched is not None and (steps_per_epoch is None or (step + 1) % steps_per_epoch == 0):
            sched.step()
        out.append({k: v.detach().numpy().copy() for k, v in p.items()})
    return out


_grad = jax.jit(jax.grad(loss_jax))  # compiled once for every test


def jax_trajectory(tx, steps=STEPS, *, jit=False):
    """Parameters after each step of an Optax transformation on the same problem.

    The update runs op by op unless `jit=True`: eager primitives are compiled once for all the tests,
    a jitted step once per optimizer (test_unjitted_equals_jitted checks that both agree).
    """
    def step(params, state):
        updates, state = tx.update(_grad(params), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step) if jit else step
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    state = tx.init(params)
    out = []
    for _ in range(steps):
        params, state = step(params, state)
        out.append({k: np.asarray(v) for k, v in params.items()})
    return out


def assert_same_trajectory(ours, theirs, tol=TOL):
    for t, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for k in NAMES:
            np.testing.assert_allclose(a[k], b[k], **tol, err_msg=f"step {t + 1}, parameter {k}")


def assert_moved(trajectory, at_least=1e-2):
    """The test problem must move the parameters far beyond the tolerance, or parity proves nothing."""
    moved = max(np.max(np.abs(trajectory[-1][k] - INIT[k])) for k in NAMES)
    assert moved > at_least, moved


# name, our options, torch constructor (params, lr, **weight_decay)
CASES = {
    "sgd": ("sgd", 0.1, {}, lambda p, **kw: torch.optim.SGD(p, **kw)),
    "sgd_momentum": ("sgd", 0.05, {"momentum": 0.9},
                     lambda p, **kw: torch.optim.SGD(p, momentum=0.9, **kw)),
    "nesterov": ("sgd", 0.05, {"momentum": 0.9, "nesterov": True},
                 lambda p, **kw: torch.optim.SGD(p, momentum=0.9, nesterov=True, **kw)),
    "rmsprop": ("rmsprop", 3e-3, {}, lambda p, **kw: torch.optim.RMSprop(p, **kw)),
    "rmsprop_momentum": ("rmsprop", 1e-3, {"momentum": 0.9},
                         lambda p, **kw: torch.optim.RMSprop(p, momentum=0.9, **kw)),
    "rmsprop_centered": ("rmsprop", 3e-3, {"centered": True, "alpha": 0.9},
                         lambda p, **kw: torch.optim.RMSprop(p, centered=True, alpha=0.9, **kw)),
    "rmsprop_centered_momentum": (
        "rmsprop", 1e-3, {"centered": True, "momentum": 0.5, "eps": 1e-3},
        lambda p, **kw: torch.optim.RMSprop(p, centered=True, momentum=0.5, eps=1e-3, **kw)),
    "adam": ("adam", 1e-2, {}, lambda p, **kw: torch.optim.Adam(p, **kw)),
    "adam_options": ("adam", 1e-2, {"betas": (0.8, 0.99), "eps": 1e-3},
                     lambda p, **kw: torch.optim.Adam(p, betas=(0.8, 0.99), eps=1e-3, **kw)),
    "adamw": ("adamw", 1e-2, {}, lambda p, **kw: torch.optim.AdamW(p, **kw)),
    "amsgrad": ("amsgrad", 1e-2, {}, lambda p, **kw: torch.optim.Adam(p, amsgrad=True, **kw)),
    "sgd_dampening": ("sgd", 0.05, {"momentum": 0.9, "dampening": 0.3},
                      lambda p, **kw: torch.optim.SGD(p, momentum=0.9, dampening=0.3, **kw)),
    "adagrad": ("adagrad", 0.05, {}, lambda p, **kw: torch.optim.Adagrad(p, **kw)),
    "adagrad_options": ("adagrad", 0.05, {"lr_decay": 0.1, "initial_accumulator_value": 0.2, "eps": 1e-3},
                        lambda p, **kw: torch.optim.Adagrad(p, lr_decay=0.1, initial_accumulator_value=0.2,
                                                            eps=1e-3, **kw)),
    "adadelta": ("adadelta", 1.0, {}, lambda p, **kw: torch.optim.Adadelta(p, **kw)),
    "adadelta_options": ("adadelta", 0.5, {"rho": 0.8, "eps": 1e-4},
                         lambda p, **kw: torch.optim.Adadelta(p, rho=0.8, eps=1e-4, **kw)),
    "adamax": ("adamax", 1e-2, {}, lambda p, **kw: torch.optim.Adamax(p, **kw)),
    "nadam": ("nadam", 1e-2, {}, lambda p, **kw: torch.optim.NAdam(p, **kw)),
    "nadam_options": ("nadam", 1e-2, {"momentum_decay": 0.1, "decoupled_weight_decay": True, "betas": (0.8, 0.99)},
                      lambda p, **kw: torch.optim.NAdam(p, momentum_decay=0.1, decoupled_weight_decay=True,
                                                        betas=(0.8, 0.99), **kw)),
    "radam": ("radam", 1e-2, {}, lambda p, **kw: torch.optim.RAdam(p, **kw)),
    "radam_decoupled": ("radam", 1e-2, {"decoupled_weight_decay": True, "betas": (0.9, 0.9)},
                        lambda p, **kw: torch.optim.RAdam(p, decoupled_weight_decay=True, betas=(0.9, 0.9), **kw)),
}


@pytest.mark.parametrize("weight_decay", [None, 0.1], ids=["default_decay", "decay_0.1"])
@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch(case, weight_decay):
    name, lr, options, make = CASES[case]
    # None passes no weight_decay to either side: both defaults (0, or 1e-2 for AdamW) are compared.
    wd = {} if weight_decay is None else {"weight_decay": weight_decay}
    ours = jax_trajectory(optimizer(name, learning_rate=lr, **options, **wd))
    theirs = torch_trajectory(lambda p: make(p, lr=lr, **wd))
    assert_moved(theirs)
    assert_same_trajectory(ours, theirs, adam_tol(lr) if name in ADAM_FAMILY else TOL)


@pytest.fixture
def x64():
    """float64 on both sides: JAX's x64 mode and torch's default dtype, restored afterwards."""
    jax.config.update("jax_enable_x64", True)
    torch.set_default_dtype(torch.float64)
    yield
    jax.config.update("jax_enable_x64", False)
    torch.set_default_dtype(torch.float32)


def _float64(tree):
    return {k: np.asarray(v, np.float64) for k, v in tree.items()}


def jax_trajectory64(tx, steps=STEPS):
    """As ``jax_trajectory`` in float64 (call with the x64 fixture active)."""
    x, y = jnp.asarray(X, jnp.float64), jnp.asarray(Y, jnp.float64)
    grad = jax.jit(jax.grad(lambda p: jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)))
    params = {k: jnp.asarray(v) for k, v in _float64(INIT).items()}
    state = tx.init(params)
    step = jax.jit(lambda p, s: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(grad(p), s, p)))
    out = []
    for _ in range(steps):
        params, state = step(params, state)
        out.append({k: np.asarray(v) for k, v in params.items()})
    return out


def torch_trajectory64(make_opt, steps=STEPS, *, scheduler=None, steps_per_epoch=None):
    p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in _float64(INIT).items()}
    x, y = torch.from_numpy(X.astype(np.float64)), torch.from_numpy(Y.astype(np.float64))
    opt = make_opt(list(p.values()))
    sched = scheduler(opt) if scheduler is not None else None
    out = []
    for step in range(steps):
        opt.zero_grad()
        torch.mean((torch.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2).backward()
        opt.step()
        if sched is not None and (steps_per_epoch is None or (step + 1) % steps_per_epoch == 0):
            sched.step()
        out.append({k: v.detach().numpy().copy() for k, v in p.items()})
    return out


TOL64 = dict(rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", list(CASES))
def test_trajectory_matches_torch_in_float64(case, x64):
    name, lr, options, make = CASES[case]
    ours = jax_trajectory64(optimizer(name, learning_rate=lr, **options, weight_decay=0.1))
    theirs = torch_trajectory64(lambda p: make(p, lr=lr, weight_decay=0.1))
    assert ours[-1]["w1"].dtype == np.float64
    assert_same_trajectory(ours, theirs, TOL64)


def test_dampening_changes_the_trajectory_and_first_step_is_undamped():
    plain = jax_trajectory(optimizer("sgd", learning_rate=0.05, momentum=0.9))
    damped = jax_trajectory(optimizer("sgd", learning_rate=0.05, momentum=0.9, dampening=0.3))
    np.testing.assert_array_equal(plain[0]["w1"], damped[0]["w1"])  # b = g on the first step, as torch
    assert np.max(np.abs(plain[-1]["w1"] - damped[-1]["w1"])) > 1e-3


def test_radam_rho_is_accurate_in_float32():
    """The float32 rho_t (no cancellation) against float64: torch switches to the rectified rule at t = 6."""
    b2 = 0.999
    t = np.arange(1, 3000, dtype=np.float64)
    rho_inf = 2 / (1 - b2) - 1
    expected = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    tx = optimizer("radam", learning_rate=1.0)
    g = {"w": jnp.ones((1,), jnp.float32)}
    state = tx.init(g)
    first = []
    for i in range(8):  # m_hat = g = 1 exactly: the update is -1 until rho_t > 5, then -r_t / (1 + eps)
        u, state = tx.update(g, state, g)
        first.append(float(u["w"][0]))
    np.testing.assert_allclose(first[:5], -1.0, rtol=1e-6)
    assert abs(first[5] + 1) > 1e-2
    assert expected[4] < 5 < expected[5]
    rho = expected[5:8]
    rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    np.testing.assert_allclose(first[5:], -rect / (1 + 1e-8), rtol=2e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "nadam"])
def test_vmap_over_learning_rates_equals_separate_runs(name):
    rates = jnp.array([0.01, 0.03, 0.1], jnp.float32)
    options = {"momentum": 0.9} if name == "sgd" else {}
    def make(lr, **kw):  # through the lookup used by the CLI and configs
        return optimizer(name, learning_rate=lr, **kw)

    def run(lr):
        tx = make(lr, weight_decay=0.1, **options)
        params = {k: jnp.asarray(v) for k, v in INIT.items()}
        state = tx.init(params)
        for _ in range(5):
            updates, state = tx.update(jax.grad(loss_jax)(params), state, params)
            params = optax.apply_updates(params, updates)
        return params

    batched = jax.jit(jax.vmap(run))(rates)
    for i, lr in enumerate([0.01, 0.03, 0.1]):
        single = jax.jit(lambda: run(lr))()  # a Python float: the single-run numerics
        for k in NAMES:  # float32 rounding, differently fused (Adam's 1/sqrt(v) amplifies it on small v)
            np.testing.assert_allclose(batched[k][i], single[k], rtol=1e-5, atol=1e-7, err_msg=f"{name} {lr} {k}")
    assert not np.allclose(batched["w1"][0], batched["w1"][2])


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_traced_momentum_and_betas_under_vmap():
    """Every numeric option may be traced: momentum of sgd, betas and eps of adam."""
    def run_sgd(m):
        return jax_like_run(train_optim.sgd(0.05, momentum=m))

    def run_adam(b1):
        return jax_like_run(train_optim.adam(1e-2, betas=(b1, 0.999), eps=jnp.float32(1e-8)))

    got = jax.vmap(run_sgd)(jnp.array([0.5, 0.9], jnp.float32))
    np.testing.assert_allclose(got["w1"][1], jax_like_run(train_optim.sgd(0.05, momentum=0.9))["w1"], rtol=1e-6)
    got = jax.vmap(run_adam)(jnp.array([0.8, 0.9], jnp.float32))
    np.testing.assert_allclose(got["w1"][0], jax_like_run(train_optim.adam(1e-2, betas=(0.8, 0.999)))["w1"],
                               rtol=1e-5, atol=1e-6)


def jax_like_run(tx, steps=5):
    params = {k: jnp.asarray(v) for k, v in INIT.items()}
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(jax.grad(loss_jax)(params), state, params)
        params = optax.apply_updates(params, updates)
    return params


def test_state_structure_is_the_former_one():
    """Checkpoints written before the optax-style functions restore: the same optimizer-state trees."""
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
    former = {"sgd": optax.chain(optax.sgd(0.1, momentum=0.9)), "adam": optax.chain(optax.adam(0.1)),
              "adamw": optax.chain(optax.adamw(0.1, weight_decay=0.0)),
              "rmsprop": optax.chain(optax.chain(optax.scale_by_rms(), optax.identity(),
                                                 optax.scale_by_learning_rate(0.1)))}
    ours = {"sgd": train_optim.sgd(0.1, momentum=0.9), "adam": train_optim.adam(0.1),
            "adamw": train_optim.adamw(0.1, weight_decay=0.0), "rmsprop": train_optim.rmsprop(0.1)}
    for name, tx in former.items():
        assert jax.tree.structure(ours[name].init(params)) == jax.tree.structure(tx.init(params)), name


def test_optimizer_lookup_is_the_function():
    for name in train_optim.OPTIMIZERS:
        a = jax_trajectory(optimizer(name, learning_rate=1e-2), 3)
        b = jax_trajectory(getattr(train_optim, name)(1e-2), 3)
        assert_same_trajectory(a, b, dict(rtol=0, atol=0))


def test_torch_defaults():
    import inspect
    for name, cls in [("adagrad", torch.optim.Adagrad), ("adadelta", torch.optim.Adadelta),
                      ("adamax", torch.optim.Adamax), ("nadam", torch.optim.NAdam), ("radam", torch.optim.RAdam),
                      ("sgd", torch.optim.SGD), ("rmsprop", torch.optim.RMSprop), ("adam", torch.optim.Adam),
                      ("adamw", torch.optim.AdamW)]:
        ours = inspect.signature(getattr(train_optim, name)).parameters
        theirs = inspect.signature(cls).parameters
        assert ours["learning_rate"].default == theirs["lr"].default, name
        for option in ours:
            if option in theirs and option not in ("weight_decay",) or (option == "weight_decay" and name == "adamw"):
                assert ours[option].default == theirs[option].default, (name, option)


def test_adamw_without_decay_is_adam():
    lr = 1e-2
    ours = jax_trajectory(optimizer("adamw", learning_rate=lr, weight_decay=0.0))
    theirs = torch_trajectory(lambda p: torch.optim.AdamW(p, lr=lr, weight_decay=0.0))
    assert_same_trajectory(ours, theirs, adam_tol(lr))
    assert_same_trajectory(ours, jax_trajectory(optimizer("adam", learning_rate=lr)), tol=dict(rtol=0, atol=0))


def test_weight_decay_coupled_vs_decoupled_differ():
    """Guard for the parity tests: the two kinds of decay give different trajectories here."""
    coupled = jax_trajectory(optimizer("adam", learning_rate=1e-2, weight_decay=0.1))
    decoupled = jax_trajectory(optimizer("adamw", learning_rate=1e-2, weight_decay=0.1))
    assert max(np.max(np.abs(coupled[-1][k] - decoupled[-1][k])) for k in NAMES) > 1e-3


def test_unjitted_equals_jitted():
    tx = optimizer("amsgrad", learning_rate=1e-2, weight_decay=0.1, clip_norm=0.5)
    assert_same_trajectory(jax_trajectory(tx, 5), jax_trajectory(tx, 5, jit=True), tol=dict(rtol=1e-6, atol=1e-7))


# ---------------------------------------------------------------------------------------------
# AMSGrad: ours is torch's, optax's is not
# ---------------------------------------------------------------------------------------------
def test_amsgrad_matches_torch_where_optax_amsgrad_does_not():
    lr, steps = 1e-2, 40
    theirs = torch_trajectory(lambda p: torch.optim.Adam(p, lr=lr, amsgrad=True), steps)
    ours = jax_trajectory(optimizer("amsgrad", learning_rate=lr), steps)
    assert_same_trajectory(ours, theirs, adam_tol(lr, steps))

    # Displacement from the start, relative: optax's variants are far from torch on the same problem.
    def distance(traj):
        return max(np.max(np.abs(traj[-1][k] - theirs[-1][k])) / np.max(np.abs(theirs[-1][k] - INIT[k]))
                   for k in NAMES)

    assert distance(ours) < 1e-4
    for bias_correction_nu in (True, False):
        optax_ams = jax_trajectory(train_optim.promotion_safe(optax.amsgrad(lr, bias_correction_nu=bias_correction_nu)),
                                   steps)
        assert distance(optax_ams) > 0.1, bias_correction_nu  # measured: 26% and 359%


def test_torch_amsgrad_transform_state():
    tx = scale_by_torch_amsgrad()
    params = {"w": jnp.array([1.0, 2.0])}
    state = tx.init(params)
    big, small = {"w": jnp.array([3.0, -1.0])}, {"w": jnp.array([0.1, 0.1])}
    _, state = tx.update(big, state)
    _, state = tx.update(small, state)
    np.testing.assert_allclose(state.nu["w"], 0.999 * 0.001 * np.array([9.0, 1.0]) + 0.001 * 0.01, rtol=1e-6)
    np.testing.assert_allclose(state.nu_max["w"], state.nu["w"], rtol=0)  # raw v still grows: max is v
    assert int(state.count) == 2


# ---------------------------------------------------------------------------------------------
# eps inside the square root: the course's formulas, in numpy (float64)
# ---------------------------------------------------------------------------------------------
def _course_grad(theta):
    return 2.0 * np.array([1.0, 3.0, 0.5]) * theta + np.cos(3.0 * theta)


@jax.jit
@jax.grad
def _course_grad_jax(theta):
    return jnp.sum(jnp.array([1.0, 3.0, 0.5]) * theta ** 2 + jnp.sin(3.0 * theta) / 3.0)


def _numpy_course(name, lr, steps, eps, b1=0.9, b2=0.999, alpha=0.99):
    theta = np.array([1.0, -0.5, 2.0])
    m = np.zeros(3)
    v = np.zeros(3)
    v_max = np.zeros(3)
    out = []
    for t in range(1, steps + 1):
        g = _course_grad(theta)
        if name == "rmsprop":  # theta -= lr * g / sqrt(v + eps)
            v = alpha * v + (1 - alpha) * g * g
            theta = theta - lr * g / np.sqrt(v + eps)
        else:  # theta -= lr * m_hat / sqrt(v_hat + eps)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            v_max = np.maximum(v_max, v)
            v_used = v_max if name == "amsgrad" else v
            theta = theta - lr * (m / (1 - b1 ** t)) / np.sqrt(v_used / (1 - b2 ** t) + eps)
        out.append(theta)
    return np.stack(out)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "amsgrad"])
def test_eps_inside_sqrt_is_the_course_formula(name):
    lr, steps, eps = 1e-2, 20, 1e-2  # a large eps so that inside and outside the root differ clearly
    tx = optimizer(name, learning_rate=lr, eps=eps, eps_inside_sqrt=True)
    theta = jnp.array([1.0, -0.5, 2.0], jnp.float32)
    state = tx.init(theta)
    ours = []
    for _ in range(steps):
        updates, state = tx.update(_course_grad_jax(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
        ours.append(np.asarray(theta))
    expected = _numpy_course(name, lr, steps, eps)
    np.testing.assert_allclose(np.stack(ours), expected, rtol=1e-5, atol=1e-6)
    outside = np.asarray(jax_course_outside(name, lr, steps, eps))
    assert np.max(np.abs(outside - expected[-1])) > 1e-4  # the option changes the result here


def jax_course_outside(name, lr, steps, eps):
    tx = optimizer(name, learning_rate=lr, eps=eps)
    theta = jnp.array([1.0, -0.5, 2.0], jnp.float32)
    state = tx.init(theta)
    for _ in range(steps):
        updates, state = tx.update(_course_grad_jax(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
    return theta


# ---------------------------------------------------------------------------------------------
# clipping, then torch's step
# ---------------------------------------------------------------------------------------------
def test_clip_value_matches_torch():
    lr, c = 0.05, 0.02
    norms = []
    ours = jax_trajectory(optimizer("sgd", learning_rate=lr, momentum=0.9, weight_decay=0.1, clip_value=c))
    theirs = torch_trajectory(lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=0.1),
                              clip=lambda p: norms.append(max(float(q.grad.abs().max()) for q in p))
                              or torch.nn.utils.clip_grad_value_(p, c))
    assert min(norms) > c  # clipping is active at every step
    assert_same_trajectory(ours, theirs)


@pytest.mark.parametrize("name,make", [
    ("adam", lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=0.1)),
    ("sgd", lambda p, lr: torch.optim.SGD(p, lr=lr, weight_decay=0.1)),
])
def test_clip_norm_matches_torch(name, make):
    lr, c = 0.05, 0.2
    norms = []
    ours = jax_trajectory(optimizer(name, learning_rate=lr, weight_decay=0.1, clip_norm=c))
    theirs = torch_trajectory(lambda p: make(p, lr),
                              clip=lambda p: norms.append(float(torch.nn.utils.clip_grad_norm_(p, c))))
    assert max(norms) > c  # clipping is active
    assert_same_trajectory(ours, theirs, adam_tol(lr) if name in ADAM_FAMILY else TOL)


def test_clip_value_then_norm_order():
    grads = {"a": jnp.array([3.0, 0.5]), "b": jnp.array([-4.0])}
    tx = optimizer("sgd", learning_rate=1.0, clip_value=1.0, clip_norm=1.0)
    updates, _ = tx.update(grads, tx.init(grads), grads)
    clipped = np.array([1.0, 0.5, -1.0])  # by value first, then to global norm 1
    expected = -clipped / np.linalg.norm(clipped)
    np.testing.assert_allclose(np.concatenate([updates["a"], updates["b"]]), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# learning-rate schedules: torch optimizer + scheduler == our optimizer + schedule
# ---------------------------------------------------------------------------------------------
SPE = 3  # optimizer steps per epoch
SCHEDULED = {
    "sgd_step_lr": (
        lambda: optimizer("sgd", learning_rate=schedules.step_decay(0.1, 2, gamma=0.5,
                                                                    steps_per_epoch=SPE), momentum=0.9),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5), SPE),
    "rmsprop_momentum_exponential": (  # lr multiplies the momentum buffer, as in torch
        lambda: optimizer("rmsprop", learning_rate=schedules.exponential(3e-3, 0.5,
                                                                         steps_per_epoch=SPE), momentum=0.9),
        lambda p: torch.optim.RMSprop(p, lr=3e-3, momentum=0.9),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.5), SPE),
    "adam_cosine_per_epoch": (
        lambda: optimizer("adam", learning_rate=schedules.cosine(1e-2, 7, final=1e-3, steps_per_epoch=SPE)),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=7, eta_min=1e-3), SPE),
    "adamw_warm_restarts_per_step": (
        lambda: optimizer("adamw", learning_rate=schedules.warm_restarts(1e-2, 4, period_mult=2),
                          weight_decay=0.5),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.5),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2), None),
    "amsgrad_lambda": (
        lambda: optimizer("amsgrad", learning_rate=schedules.per_epoch(1e-2, lambda e: 1.0 / (1.0 + e) ** 2,
                                                                        steps_per_epoch=SPE)),
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1.0 + e) ** 2), SPE),
}


@pytest.mark.parametrize("case", list(SCHEDULED))
def test_with_schedule_matches_torch_scheduler(case):
    make_ours, make_torch, make_scheduler, steps_per_epoch = SCHEDULED[case]
    steps = 7 * SPE
    ours = jax_trajectory(make_ours(), steps)
    theirs = torch_trajectory(make_torch, steps, scheduler=make_scheduler, steps_per_epoch=steps_per_epoch)
    assert_moved(theirs)
    adam_family = case.startswith(("adam", "amsgrad"))  # every peak learning rate there is 1e-2
    assert_same_trajectory(ours, theirs, adam_tol(1e-2, steps) if adam_family else TOL)


@pytest.mark.parametrize("case", list(SCHEDULED))
def test_with_schedule_matches_torch_scheduler_in_float64(case, x64):
    """The schedule computes in float64 under x64: torch's float64 trajectory to 1e-12."""
    make_ours, make_torch, make_scheduler, steps_per_epoch = SCHEDULED[case]
    steps = 7 * SPE
    ours = jax_trajectory64(make_ours(), steps)
    theirs = torch_trajectory64(make_torch, steps, scheduler=make_scheduler, steps_per_epoch=steps_per_epoch)
    assert_same_trajectory(ours, theirs, TOL64)


def test_rmsprop_schedule_order_matters():
    """Guard: with a schedule, optax.rmsprop (lr before the momentum trace) leaves torch's trajectory."""
    lr = schedules.exponential(3e-3, 0.5, steps_per_epoch=SPE)
    ours = jax_trajectory(optimizer("rmsprop", learning_rate=lr, momentum=0.9), 7 * SPE)
    alias = jax_trajectory(optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False, momentum=0.9), 7 * SPE)
    assert max(np.max(np.abs(ours[-1][k] - alias[-1][k])) for k in NAMES) > 1e-3


# ---------------------------------------------------------------------------------------------
# weight-decay masks and trainable parameters
# ---------------------------------------------------------------------------------------------
def _net_params(rng):
    f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return {"Conv_0": {"kernel": f(3, 3, 2, 4), "bias": f(4)},
            "BatchNorm_0": {"scale": f(4), "bias": f(4)},
            "Block_0": {"bn1": {"weight": f(4, 4)}, "subnet": {"kernel": f(4, 4)}},
            "LayerNorm_0": {"scale": f(4)},
            "Dense_0": {"kernel": f(4, 2), "bias": f(2)},
            "prelu": {"alpha": f(1)}}


DECAYED = {("Conv_0", "kernel"), ("Block_0", "subnet", "kernel"), ("Dense_0", "kernel")}


def _leaves(tree):
    return {path_names(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def test_no_bias_no_norm_rule(rng):
    decided = {path: no_bias_no_norm(path, leaf) for path, leaf in _leaves(_net_params(rng)).items()}
    assert {path for path, decay in decided.items() if decay} == DECAYED
    assert no_bias_no_norm(("GroupNorm_1", "kernel"), np.ones((2, 2))) is False
    assert no_bias_no_norm(("conv_BN2", "w"), np.ones((2, 2))) is False
    assert no_bias_no_norm(("layer", "bias"), np.ones((2, 2))) is False  # a 2-D bias by name
    assert no_bias_no_norm(("abnormal_head", "w"), np.ones((2, 2))) is False  # contains "norm"
    assert no_bias_no_norm(("cabnet", "w"), np.ones((2, 2))) is True  # "bn" only as a token


@pytest.mark.parametrize("name,mask", [
    ("sgd", "no_bias_no_norm"), ("adamw", "no_bias_no_norm"),
    ("sgd", lambda path, p: path[-1] == "kernel" and "subnet" not in path),
])
def test_masked_weight_decay_leaves_excluded_parameters_unchanged(rng, name, mask):
    params = _net_params(rng)
    tx = optimizer(name, learning_rate=0.1, weight_decay=0.1, weight_decay_mask=mask)
    zero = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    update = jax.jit(tx.update)
    new = params
    for _ in range(5):
        updates, state = update(zero, state, new)
        new = optax.apply_updates(new, updates)
    decayed = DECAYED if isinstance(mask, str) else {("Conv_0", "kernel"), ("Dense_0", "kernel")}
    before, after = _leaves(params), _leaves(new)
    for path in before:
        if path in decayed:  # p <- p (1 - lr * wd) five times, with zero gradient
            np.testing.assert_allclose(after[path], before[path] * 0.99 ** 5, rtol=1e-6, err_msg=str(path))
        else:
            np.testing.assert_array_equal(after[path], before[path], err_msg=str(path))


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_trainable_freezes_bitwise_and_allocates_no_state(rng, name):
    params = _net_params(rng)
    params["Dense_0"]["kernel"] = params["Dense_0"]["kernel"].at[0, 0].set(-0.0)  # p + 0.0 would flip it
    trainable = lambda path, p: path[-1] in ("scale", "bias") and "BatchNorm" in path[-2]  # noqa: E731
    options = dict(momentum=0.9) if name == "sgd" else {}
    tx = optimizer(name, learning_rate=0.1, weight_decay=0.1, clip_norm=1.0, trainable=trainable, **options)
    state = tx.init(params)
    update = jax.jit(tx.update)
    new = params
    for i in range(5):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        updates, state = update(grads, state, new)
        new = optax.apply_updates(new, updates)
    before, after = _leaves(params), _leaves(new)
    for path in before:
        if trainable(path, before[path]):
            assert np.max(np.abs(after[path] - before[path])) > 1e-2, path
        else:
            np.testing.assert_array_equal(after[path].view(np.uint32), before[path].view(np.uint32),
                                          err_msg=str(path))
    # state: Adam keeps m and v, SGD one momentum buffer, only for the 8 BatchNorm numbers
    per_param = 2 if name == "adam" else 1
    state_floats = sum(x.size for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating))
    assert state_floats == per_param * 8


def test_trainable_equals_optimizing_the_subset(rng):
    params = _net_params(rng)
    trainable = lambda path, p: path[0] == "Dense_0"  # noqa: E731
    full = optimizer("adam", learning_rate=0.1, weight_decay=0.1, clip_norm=0.5, trainable=trainable)
    sub = optimizer("adam", learning_rate=0.1, weight_decay=0.1, clip_norm=0.5)
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
    p_full, s_full = params, full.init(params)
    p_sub, s_sub = params["Dense_0"], sub.init(params["Dense_0"])
    for _ in range(3):
        u, s_full = full.update(grads, s_full, p_full)
        p_full = optax.apply_updates(p_full, u)
        u, s_sub = sub.update(grads["Dense_0"], s_sub, p_sub)
        p_sub = optax.apply_updates(p_sub, u)
    for k in p_sub:  # clip_norm over the trainable leaves only, as torch skips params without .grad
        np.testing.assert_allclose(p_full["Dense_0"][k], p_sub[k], rtol=1e-6, atol=1e-7)


def test_trainable_with_weight_decay_mask(rng):
    params = _net_params(rng)
    tx = optimizer("sgd", learning_rate=0.1, weight_decay=0.1, weight_decay_mask="no_bias_no_norm",
                   trainable=lambda path, p: path[0] in ("Dense_0", "BatchNorm_0"))
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zero, tx.init(params), params)
    moved = {path for path, u in _leaves(updates).items() if np.any(u != 0)}
    assert moved == {("Dense_0", "kernel")}


def test_path_names():
    tree = {"a": [1.0, {"b": 2.0}]}
    paths = [path_names(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    assert paths == [("a", "0"), ("a", "1", "b")]


# ---------------------------------------------------------------------------------------------
# bad options
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,kwargs,error,match", [
    ("adabelief", {}, ValueError, r"optimizer: unknown name 'adabelief'; valid names: 'sgd', 'rmsprop', 'adam'"),
    (3, {}, TypeError, r"optimizer: name must be a string"),
    ("adam", {"learning_rate": -0.1}, ValueError, r"adam: learning_rate must be a finite real number >= 0.0, got -0.1"),
    ("adam", {"learning_rate": float("nan")}, ValueError, r"adam: learning_rate must be a finite real number >= 0.0"),
    ("adam", {"learning_rate": "0.1"}, TypeError, r"adam: learning_rate must be a real number"),
    ("adam", {"learning_rate": jnp.array([0.1, -0.1])}, ValueError,
     r"adam: learning_rate must be a finite real number >= 0.0 \(every element of the array\)"),
    ("adam", {"learning_rate": jnp.array(True)}, TypeError, r"adam: learning_rate must be a real number >= 0.0 "
                                                            r"or a real array, got an array of dtype bool"),
    ("sgd", {"betas": (0.9, 0.99)}, TypeError,
     r"optimizer\('sgd'\): unknown option 'betas'; valid options for 'sgd': clip_norm, clip_value, dampening"),
    ("adam", {"momentum": 0.9}, TypeError, r"unknown option 'momentum'"),
    ("sgd", {"nesterov": True}, ValueError, r"sgd: nesterov=True needs momentum > 0 and dampening = 0"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     r"nesterov=True needs momentum > 0 and dampening = 0 \(as torch\), got momentum=0.9 and dampening=0.1"),
    ("sgd", {"nesterov": 1, "momentum": 0.9}, TypeError, r"sgd: nesterov must be a Python bool"),
    ("sgd", {"momentum": -0.5}, ValueError, r"momentum must be a finite real number >= 0.0, got -0.5"),
    ("sgd", {"dampening": "0.1"}, TypeError, r"sgd: dampening must be a real number"),
    ("rmsprop", {"alpha": 1.5}, ValueError, r"alpha must be a finite real number in \[0.0, 1.0\], got 1.5"),
    ("rmsprop", {"centered": "yes"}, TypeError, r"centered must be a Python bool"),
    ("adam", {"betas": (0.9, 1.0)}, ValueError, r"betas\[1\] must be a finite real number in \[0.0, 1.0\), got 1.0"),
    ("adam", {"betas": 0.9}, TypeError, r"betas must be a pair"),
    ("amsgrad", {"eps": -1e-8}, ValueError, r"amsgrad: eps must be a finite real number >= 0.0"),
    ("adam", {"eps_inside_sqrt": None}, TypeError, r"eps_inside_sqrt must be a Python bool"),
    ("adamw", {"weight_decay": -1e-2}, ValueError, r"weight_decay must be a finite real number >= 0.0"),
    ("sgd", {"weight_decay_mask": "no_bias"}, ValueError, r"unknown weight_decay_mask preset 'no_bias'"),
    ("sgd", {"weight_decay_mask": 3}, TypeError, r"weight_decay_mask must be None, 'no_bias_no_norm' or a"),
    ("sgd", {"clip_value": 0.0}, ValueError, r"clip_value must be a finite real number > 0.0, got 0.0"),
    ("sgd", {"clip_norm": -1.0}, ValueError, r"clip_norm must be a finite real number > 0.0, got -1.0"),
    ("sgd", {"trainable": ("Dense_0",)}, TypeError, r"trainable must be a predicate"),
    ("adagrad", {"lr_decay": -1.0}, ValueError, r"adagrad: lr_decay must be a finite real number >= 0.0"),
    ("adagrad", {"initial_accumulator_value": -1.0}, ValueError, r"adagrad: initial_accumulator_value must be"),
    ("adadelta", {"rho": 1.5}, ValueError, r"adadelta: rho must be a finite real number in \[0.0, 1.0\]"),
    ("adamax", {"betas": (1.0, 0.9)}, ValueError, r"adamax: betas\[0\] must be a finite real number in"),
    ("nadam", {"momentum_decay": -4e-3}, ValueError, r"nadam: momentum_decay must be a finite real number >= 0.0"),
    ("nadam", {"decoupled_weight_decay": 1}, TypeError, r"nadam: decoupled_weight_decay must be a Python bool"),
    ("radam", {"eps": "1e-8"}, TypeError, r"radam: eps must be a real number"),
    ("radam", {"lr": 1e-3}, TypeError, r"optimizer\('radam'\): unknown option 'lr'; valid options for 'radam'"),
])
def test_bad_options(name, kwargs, error, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        optimizer(name, **kwargs)


def test_predicate_must_return_bool():
    tx = optimizer("sgd", learning_rate=0.1, trainable=lambda path, p: p.sum() > 0)
    with pytest.raises(TypeError, match=r"trainable predicate must return a Python bool, got .* parameter w"):
        tx.init({"w": jnp.ones(3)})
    tx = optimizer("sgd", learning_rate=0.1, weight_decay=0.1, weight_decay_mask=lambda path, p: "yes")
    with pytest.raises(TypeError, match=r"weight_decay_mask predicate must return a Python bool, got str"):
        tx.update({"w": jnp.ones(3)}, tx.init({"w": jnp.ones(3)}), {"w": jnp.ones(3)})


def test_name_is_case_insensitive_and_schedule_accepted():
    schedule = schedules.cosine(1e-2, 10)
    tx = optimizer("SGD", learning_rate=schedule)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for step in range(3):  # sgd without momentum: the update is -lr(step) * g
        updates, state = tx.update({"w": jnp.full(2, 2.0)}, state, params)
        np.testing.assert_allclose(updates["w"], -2.0 * schedule(step), rtol=1e-7)
