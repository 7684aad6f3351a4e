"""Populations (`fit(seeds=, hparams=)`, jaxnets/train/population.py): members equal single runs, divergence
and early stopping per member, bitwise resume, unstack, the sequential mode, devices, memory, bad grids.

Tolerance: FLOAT32 (1e-5). A member computes the single run's float32 step, but under `jax.vmap` XLA may
lower a convolution to a grouped one that sums in another order; after a few steps the observed
differences are ~1e-7 (LeNet-5, the BN/dropout net) and ~1e-5 relative for ResNet-18 (FLOAT32_DEEP_NETWORK).
"""
import functools
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as flax_nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets
import jaxnets.nn as jnn
from _state_compare import assert_bitwise_equal, state_leaves
from _tolerances import FLOAT32, FLOAT32_DEEP_NETWORK
from jaxnets import data, models
from jaxnets.data import Batches
from jaxnets.data.augment import random_flip
from jaxnets.layers.dropout import dropout
from jaxnets.layers.losses import cross_entropy
from jaxnets.train import population as population_module
from jaxnets.train import optimizer, population_members, unstack
from jaxnets.train.checkpoint import Checkpoints
from jaxnets.train.evaluation import evaluate
from jaxnets.train.fit import fit
from jaxnets.train.history import EarlyStopping, History, NonFiniteLossError
from jaxnets.train.plateau import ReduceLROnPlateau
from jaxnets.train.state import TrainState
from jaxnets.train.steps import make_train_step

from _tiny import brightness_data

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CLASSES, N, BATCH = 3, 48, 8  # 6 full batches per epoch


class BNDropNet(flax_nn.Module):
    """Conv -> BatchNorm -> ReLU -> pool -> Dropout(self.dropout) -> Dense, with the registry's `dropout` name."""

    dropout: float = 0.25

    @flax_nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Conv(4, 3, padding=1, use_bias=False)(x)
        x = jnn.ReLU()(jnn.BatchNorm()(x, train=train, mask=mask))
        x = jnn.Dropout(self.dropout)(jnn.GlobalAvgPool()(x), train=train)
        return jnn.Dense(CLASSES)(x)


def _data(n: int, seed: int) -> dict:
    return brightness_data(n, seed, classes=CLASSES, size=8)


TRAIN, VAL = _data(N, 0), _data(20, 1)
MODEL = BNDropNet()
TX = optimizer("sgd", learning_rate=0.1, momentum=0.9)


def sgd(hp):
    return optimizer("sgd", learning_rate=hp["learning_rate"], momentum=0.9)


@pytest.fixture(autouse=True)
def _vmap_by_default(monkeypatch):
    """These tests check the vmapped program, which population="auto" (fit's default) does not pick on CPU."""
    monkeypatch.setitem(population_module.AUTO_MODE, "cpu", "vmap")


def test_auto_picks_sequential_on_cpu_and_vmap_elsewhere(monkeypatch):
    monkeypatch.setitem(population_module.AUTO_MODE, "cpu", "sequential")

    class Device:
        def __init__(self, platform):
            self.platform = platform

    assert population_module.resolve_population_mode("auto", [Device("cpu")] * 2) == "sequential"
    assert population_module.resolve_population_mode("auto", [Device("gpu")]) == "vmap"
    assert population_module.resolve_population_mode("auto", [Device("tpu"), Device("cpu")]) == "vmap"
    assert population_module.resolve_population_mode("sequential", [Device("gpu")]) == "sequential"


def _pop(**kwargs):
    options = dict(val_data=VAL, epochs=2, batch_size=BATCH, optimizer=TX, progress=False)
    return fit(MODEL, TRAIN, **{**options, **kwargs})


def _assert_member_equals(state, r, single, tol=FLOAT32):
    member = unstack(state, r)
    for name in ("params", "batch_stats", "opt_state"):
        got, want = jax.tree.leaves(getattr(member, name)), jax.tree.leaves(getattr(single, name))
        assert len(got) == len(want), name
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol, err_msg=f"member {r}: {name}")
    assert int(member.step) == int(single.step)


# ---------------------------------------------------------------------------------------------
# members
# ---------------------------------------------------------------------------------------------
def test_members_are_grid_points_outer_seeds_inner():
    members = population_members([3, 5], {"learning_rate": [0.1, 0.2], "momentum": [0.0, 0.9]})
    assert members[:3] == [{"seed": 3, "learning_rate": 0.1, "momentum": 0.0},
                           {"seed": 5, "learning_rate": 0.1, "momentum": 0.0},
                           {"seed": 3, "learning_rate": 0.1, "momentum": 0.9}]
    assert len(members) == 8 and members[-1] == {"seed": 5, "learning_rate": 0.2, "momentum": 0.9}
    assert population_members() == [{"seed": 0}]
    assert population_members([1, 2]) == [{"seed": 1}, {"seed": 2}]


# ---------------------------------------------------------------------------------------------
# equivalence with single runs
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist():
    sample = data.mnist_sample()
    order = np.random.default_rng(0).permutation(len(sample["label"]))
    return ({k: v[order[:192]] for k, v in sample.items()}, {k: v[order[192:292]] for k, v in sample.items()})


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_lenet5_members_equal_single_runs(mnist):
    train_set, val_set = mnist
    model = models.create("lenet5")
    state, history = fit(model, train_set, val_data=val_set, epochs=1, batch_size=64, seeds=[0, 1],
                         hparams={"learning_rate": [0.01, 0.05]}, optimizer=sgd, progress=False)
    assert history.runs == [{"seed": 0, "learning_rate": 0.01}, {"seed": 1, "learning_rate": 0.01},
                            {"seed": 0, "learning_rate": 0.05}, {"seed": 1, "learning_rate": 0.05}]
    assert jax.tree.leaves(state.params)[0].shape[0] == 4 and state.step.shape == (4,)
    for r, (seed, lr) in ((1, (1, 0.01)), (2, (0, 0.05))):
        single, single_history = fit(model, train_set, val_data=val_set, epochs=1, batch_size=64, seed=seed,
                                     optimizer=optimizer("sgd", learning_rate=lr, momentum=0.9), progress=False)
        _assert_member_equals(state, r, single)
        for name in ("train_loss", "train_error", "val_loss", "val_error"):
            np.testing.assert_allclose(getattr(history, name)[0][r], getattr(single_history, name)[0], **FLOAT32)
    assert history.diverged == [None] * 4 and history.stopped_early == [False] * 4


def test_bn_dropout_net_members_equal_single_runs():
    """BatchNorm statistics, dropout keys and augmentation keys per member; dropout_rate and label_smoothing swept."""
    grid = {"dropout_rate": [0.0, 0.5], "label_smoothing": [0.0, 0.1]}
    state, history = _pop(seeds=[2], hparams=grid, augment=random_flip)
    assert [r["dropout_rate"] for r in history.runs] == [0.0, 0.0, 0.5, 0.5]
    for r in (0, 3):
        rate, smoothing = history.runs[r]["dropout_rate"], history.runs[r]["label_smoothing"]
        single, single_history = fit(MODEL.clone(dropout=rate), TRAIN, val_data=VAL, epochs=2, batch_size=BATCH,
                                     optimizer=TX, seed=2, augment=random_flip, progress=False,
                                     loss_fn=functools.partial(cross_entropy, label_smoothing=smoothing))
        _assert_member_equals(state, r, single)
        np.testing.assert_allclose(history.val_loss[1][r], single_history.val_loss[1], **FLOAT32)
    # The swept values mattered: the members differ.
    assert not np.allclose(history.train_loss[1][0], history.train_loss[1][3])


@pytest.mark.slow
def test_resnet18_two_steps_equal_single_runs():
    """Two steps of ResNet-18 (CIFAR): the member is as close to a float64 reference as the single run is.

    Here no fixed float32 tolerance is honest: at initialisation on random images the gradients of the
    first layers come out of BatchNorm backward passes that cancel almost exactly, so the two float32
    programs (plain convolutions; vmapped, i.e. grouped, convolutions) can differ by about 2e-4 after two
    steps on 32 x 32 images, EACH about 3e-4 away from the same steps in float64 (measured at 32 x 32).
    The test bounds the member's float64 distance by twice the single run's, and checks that the batches,
    keys and step counts were the same by the float32 last layer (1e-4)."""
    rng = np.random.default_rng(0)
    # 16 x 16 images: every layer and block of the CIFAR network (the last stage at 2 x 2), at a quarter of
    # the float64 reference's convolution work (XLA's float64 convolutions on CPU are slow).
    train_set = {"image": rng.integers(0, 256, (16, 16, 16, 3)).astype(np.uint8),
                 "label": rng.integers(0, 10, 16).astype(np.int32)}
    model = models.create("resnet18", variant="cifar")
    tx = optimizer("sgd", learning_rate=0.01, momentum=0.9)
    state, _ = fit(model, train_set, epochs=1, batch_size=8, seeds=[0, 1], optimizer=tx, progress=False)
    single, _ = fit(model, train_set, epochs=1, batch_size=8, seed=1, optimizer=tx, progress=False)
    member = unstack(state, 1)
    assert int(member.step) == int(single.step) == 2
    np.testing.assert_allclose(member.params["fc"]["kernel"], single.params["fc"]["kernel"], **FLOAT32_DEEP_NETWORK)
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        start = TrainState.create(model, tx, train_set["image"][:1], 1)
        reference = jax.tree.map(lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                                 start)
        reference = reference.replace(opt_state=tx.init(reference.params))
        step = jax.jit(make_train_step())
        with jax.numpy_dtype_promotion("standard"):  # x64's int64 argmax against the int32 labels
            for batch in Batches(train_set, 8, seed=1, prefetch=0).epoch(0):
                reference, _ = step(reference, {**batch, "mask": np.ones(8, bool)})

        def distance(params):
            return max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b))))
                       for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference.params), strict=True))

        assert distance(member.params) <= 2 * distance(single.params), (distance(member.params),
                                                                        distance(single.params))
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_sequential_mode_equals_vmap():
    grid = {"learning_rate": [0.05, 0.1]}
    a, ha = _pop(seeds=[0, 1], hparams=grid, optimizer=sgd)
    b, hb = _pop(seeds=[0, 1], hparams=grid, optimizer=sgd, population="sequential")
    for x, y in zip(state_leaves(a), state_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **FLOAT32)
    np.testing.assert_allclose(ha.val_loss, hb.val_loss, **FLOAT32)
    assert hb.runs == ha.runs


def test_padded_last_batch_and_learning_rates_per_member():
    """drop_last=False (the last batch padded and masked) and History.learning_rate read per member."""
    train_set = _data(N + 3, 0)

    def injected(hp):
        return optax.inject_hyperparams(optax.sgd)(learning_rate=hp["learning_rate"], momentum=0.9)

    state, history = fit(MODEL, train_set, epochs=1, batch_size=BATCH, seeds=[0, 1], drop_last=False,
                         hparams={"learning_rate": [0.05, 0.1]}, optimizer=injected, progress=False)
    np.testing.assert_allclose(history.learning_rate[0], [0.05, 0.05, 0.1, 0.1], rtol=1e-6)
    single, single_history = fit(MODEL, train_set, epochs=1, batch_size=BATCH, seed=1, drop_last=False,
                                 optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9),
                                 progress=False)
    assert int(single.step) == N // BATCH + 1
    _assert_member_equals(state, 3, single)
    np.testing.assert_allclose(history.train_loss[0][3], single_history.train_loss[0], **FLOAT32)


# ---------------------------------------------------------------------------------------------
# divergence, early stopping, NonFiniteLossError.history
# ---------------------------------------------------------------------------------------------
def test_a_diverged_member_is_recorded_and_frozen_while_the_others_train():
    state, history = _pop(seeds=[0], hparams={"learning_rate": [0.1, 1e30]}, optimizer=sgd, epochs=2)
    assert history.diverged[0] is None
    d = history.diverged[1]
    assert d["epoch"] == 1 and isinstance(d["step"], int) and 0 <= d["step"] < N // BATCH
    assert np.isnan(history.train_loss[0][1]) and np.isnan(history.val_error[1][1])
    assert np.isfinite(history.train_loss[1][0])
    member = unstack(state, 1)
    assert int(member.step) == d["step"]  # frozen at the last finite state: the updates before the bad one
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(member.params))
    single, _ = fit(MODEL, TRAIN, val_data=VAL, epochs=2, batch_size=BATCH, seed=0,
                    optimizer=optimizer("sgd", learning_rate=0.1, momentum=0.9), progress=False)
    _assert_member_equals(state, 0, single)


def test_every_member_diverged_raises_with_the_history():
    with pytest.raises(NonFiniteLossError, match="every member of the population has diverged") as info:
        _pop(seeds=[0, 1], hparams={"learning_rate": [1e30]}, optimizer=sgd)
    assert isinstance(info.value.history, History) and len(info.value.history) == 0
    assert info.value.epoch == 1


def test_single_run_non_finite_loss_error_carries_the_history():
    steps = N // BATCH
    rate = lambda step: jnp.where(step < steps, 0.01, 1e30)  # epoch 1 trains, epoch 2 diverges
    with pytest.raises(NonFiniteLossError) as info:
        fit(MODEL, TRAIN, epochs=3, batch_size=BATCH, optimizer=optimizer("sgd", learning_rate=rate), seed=0,
            progress=False)
    history = info.value.history
    assert info.value.epoch == 2 and isinstance(history, History) and len(history) == 1
    assert np.isfinite(history.train_loss[0])


def test_early_stopping_per_member_keeps_each_best_state():
    stop = EarlyStopping(monitor="train_loss", patience=1, min_delta=1e-3)
    model = MODEL.clone(dropout=0.0)  # lr 0 then gives the same training loss every epoch (up to rounding)
    state, history = fit(model, TRAIN, val_data=VAL, epochs=3, batch_size=BATCH, seeds=[0],
                         hparams={"learning_rate": [0.0, 0.1]}, optimizer=sgd, early_stopping=stop, progress=False)
    assert history.stopped_early == [True, False] and history.best_epoch == [1, 3]
    assert np.isnan(history.train_loss[2][0]) and np.isfinite(history.train_loss[2][1])
    # Member 0 (lr 0: only its BatchNorm statistics move) is returned as it was after its best epoch 1.
    single, _ = fit(model, TRAIN, val_data=VAL, epochs=1, batch_size=BATCH, seed=0,
                    optimizer=optimizer("sgd", learning_rate=0.0, momentum=0.9), progress=False)
    _assert_member_equals(state, 0, single)


# ---------------------------------------------------------------------------------------------
# checkpoints, unstack
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_resume_is_bitwise(tmp_path):
    options = dict(seeds=[0, 1], hparams={"learning_rate": [0.05, 0.1]}, optimizer=sgd, augment=random_flip,
                   early_stopping=EarlyStopping(monitor="val_loss", patience=5))
    full, full_history = _pop(epochs=3, **options)
    _pop(epochs=1, checkpoint_dir=tmp_path, **options)
    resumed, history = _pop(epochs=3, checkpoint_dir=tmp_path, resume=True, **options)
    assert_bitwise_equal(resumed, full)
    assert history.val_loss == full_history.val_loss and history.best_epoch == full_history.best_epoch
    assert (tmp_path / "history.json").exists()
    assert History.from_json((tmp_path / "history.json").read_text()).runs == history.runs
    with pytest.raises(ValueError, match="different settings"):
        _pop(epochs=3, checkpoint_dir=tmp_path, resume=True, **{**options, "seeds": [0, 2]})
    with pytest.raises(ValueError, match="pass resume=True"):
        _pop(epochs=3, checkpoint_dir=tmp_path, **options)


def test_unstack_gives_an_ordinary_train_state(tmp_path):
    state, history = _pop(seeds=[0, 1], hparams={"learning_rate": [0.05, 0.1]}, optimizer=sgd, epochs=1)
    member = unstack(state, 3)
    assert jax.tree.leaves(member.params)[0].shape == jax.tree.leaves(state.params)[0].shape[1:]
    metrics = evaluate(member, VAL, batch_size=BATCH)
    np.testing.assert_allclose(metrics["loss"], history.val_loss[0][3], **FLOAT32)
    with Checkpoints(tmp_path) as checkpoints:
        checkpoints.save(1, member, meta={}, best_rank=1)
        checkpoints.wait()
        restored, _ = checkpoints.restore(member)
    assert_bitwise_equal(restored, member)
    member.apply_gradients(jax.tree.map(jnp.zeros_like, member.params))  # its tx fits its opt_state
    assert jaxnets.summary(MODEL, member.input_shape).params > 0
    with pytest.raises(ValueError, match=r"unstack: r must be in \[0, 4\)"):
        unstack(state, 4)
    with pytest.raises(TypeError, match="unstack: state must be the stacked TrainState of a population"):
        unstack(member, 0)


# ---------------------------------------------------------------------------------------------
# memory, devices
# ---------------------------------------------------------------------------------------------
def test_a_population_too_large_for_memory_names_the_largest_that_fits(monkeypatch):
    member = population_module.population_memory(MODEL, (8, 8, 1), BATCH)
    monkeypatch.setattr(population_module, "available_memory", lambda device: int(2.5 * member))
    with pytest.raises(ValueError, match=r"the largest population that fits is R = 2\."):
        _pop(seeds=[0, 1, 2])


_DEVICES_WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    sys.path.insert(0, sys.argv[2])
    from test_population import MODEL, TRAIN, VAL, sgd, BATCH
    from jaxnets.train.fit import fit
    from _state_compare import state_leaves
    out = {}
    for seeds in ([0, 1, 2, 3], [0]):
        for devices in (jax.devices()[:1], jax.devices()):
            state, history = fit(MODEL, TRAIN, val_data=VAL, epochs=1, batch_size=BATCH, seeds=seeds,
                                 hparams={"learning_rate": [0.05, 0.1]}, optimizer=sgd, devices=devices,
                                 population="vmap", progress=False)
            for i, leaf in enumerate(state_leaves(state)):
                out[f"{len(seeds) * 2}/{len(devices)}/{i}"] = leaf
            out[f"{len(seeds) * 2}/{len(devices)}/val_loss"] = np.asarray(history.val_loss)
            out[f"mesh/{len(seeds) * 2}/{len(devices)}"] = np.asarray(jax.tree.leaves(state.params)[0].sharding.mesh.devices.shape)
    np.savez(sys.argv[1], **out)
""")


@pytest.mark.slow
@pytest.mark.parametrize("size", [8, 2])
def test_eight_devices_equal_one_device(tmp_path_factory, size):
    """R = 8 (one member per device) and R = 2 (2 runs x 4-way data parallel) against one device."""
    out = tmp_path_factory.getbasetemp() / "population_devices.npz"
    if not out.exists():
        env = dict(__import__("os").environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
                   PYTHONPATH=f"{ROOT}:{HERE}:{HERE.parent}")
        proc = subprocess.run([sys.executable, "-c", _DEVICES_WORKER, str(out), str(HERE)], cwd=HERE, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    with np.load(out) as f:
        results = dict(f)
    one = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{size}/1/")}
    eight = {k.split("/", 2)[2]: v for k, v in results.items() if k.startswith(f"{size}/8/")}
    assert one.keys() == eight.keys() and len(one) > 5
    # ("runs", "batch"): R = 8 puts one member on each device; R = 2 splits each member's batch over 4.
    assert results[f"mesh/{size}/8"].tolist() == ([8, 1] if size == 8 else [2, 4])
    for k in one:
        np.testing.assert_allclose(eight[k], one[k], **FLOAT32, err_msg=k)


# ---------------------------------------------------------------------------------------------
# traced hyperparameters in the layers
# ---------------------------------------------------------------------------------------------
def test_traced_dropout_rate_and_label_smoothing_equal_the_float_ones(key):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(64, 16)), jnp.float32)
    want = dropout(key, x, 0.3, train=True)
    got = jax.jit(lambda rate: dropout(key, x, rate, train=True))(jnp.float32(0.3))
    np.testing.assert_allclose(got, want, **FLOAT32)
    assert np.array_equal(np.asarray(got) == 0, np.asarray(want) == 0)  # the same mask
    np.testing.assert_array_equal(jax.jit(lambda r: dropout(key, x, r, train=True))(jnp.float32(0.0)), x)
    labels = jnp.asarray([0, 2, 1, 1])
    logits = x[:4, :3]
    want = cross_entropy(logits, labels, label_smoothing=0.2)
    got = jax.jit(lambda eps: cross_entropy(logits, labels, label_smoothing=eps))(jnp.float32(0.2))
    np.testing.assert_allclose(got, want, **FLOAT32)
    with pytest.raises(ValueError, match=r"dropout: rate \(the DROP probability\) must be in \[0, 1\), got 1.5"):
        dropout(key, x, jnp.float32(1.5), train=True)
    with pytest.raises(TypeError, match="dropout: rate must be a real number in \\[0, 1\\) or a real scalar array"):
        dropout(key, x, "0.5", train=True)
    with pytest.raises(ValueError, match="cross_entropy: label_smoothing must be a finite real number"):
        cross_entropy(logits, labels, label_smoothing=jnp.float32(1.5))


# ---------------------------------------------------------------------------------------------
# bad arguments: all raised before anything is compiled
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hparams={"learning_rate": []}), ValueError, r"hparams\['learning_rate'\] is an empty list"),
    (dict(hparams={"learning_rate": ["0.1"]}), TypeError, r"hparams\['learning_rate'\] must hold real numbers"),
    (dict(hparams={"learning_rate": [True]}), TypeError, r"must hold real numbers \(not bools"),
    (dict(hparams={"learning_rate": [float("nan")]}), ValueError, "must hold finite numbers"),
    (dict(hparams={"learning_rate": [0.1, 0.1]}), ValueError, "holds a value twice"),
    (dict(hparams={"learning_rate": 0.1}), TypeError, r"hparams\['learning_rate'\] must be a list of numbers"),
    (dict(hparams=[("learning_rate", [0.1])]), TypeError, "hparams must be a dict"),
    (dict(seeds=3), TypeError, "seeds must be a list of distinct non-negative ints"),
    (dict(hparams={"seed": [1]}), ValueError, "hparams may not use the name .seed."),
    (dict(seeds=[]), ValueError, "seeds must be a non-empty list"),
    (dict(seeds=[0, 0]), ValueError, "seeds must be distinct"),
    (dict(seeds=[-1]), ValueError, "every seed in seeds"),
    (dict(seeds=[True]), TypeError, "every seed in seeds"),
    (dict(seeds=[0], seed=1), ValueError, "pass seed= for one run or seeds= for a population, not both"),
    (dict(seeds=[0], population="fast"), ValueError, "unknown population 'fast'"),
    (dict(seeds=[0], parallel="pmap"), ValueError, r"unknown parallel \(for a population\) 'pmap'"),
    (dict(seeds=[0], plateau=ReduceLROnPlateau(0.1)), ValueError, "plateau= is not supported for a population"),
    (dict(population="sequential"), ValueError, "applies to a population only"),
    (dict(hparams={"learning_rate": [0.1]}, optimizer=TX), ValueError,
     r"hparams \['learning_rate'\] are optimizer hyperparameters, but optimizer is a fixed GradientTransformation"),
    (dict(hparams={"momentum": [0.5]}, optimizer=lambda hp: optimizer("sgd", **hp)), TypeError,
     "optimizer\\(hp\\) failed for the first member's hyperparameters .*'learning_rate'"),
    (dict(hparams={"betas": [0.5]}, optimizer=lambda hp: optimizer("sgd", learning_rate=0.1, **hp)), TypeError,
     "unknown option 'betas'"),
    (dict(hparams={"learning_rate": [0.1]}, optimizer=lambda hp: optimizer("sgd", learning_rate=hp["lr"])),
     ValueError, "optimizer\\(hp\\) reads the hyperparameter 'lr', which hparams does not give"),
    (dict(hparams={"learning_rate": [0.1]}, optimizer=lambda hp: 0.1), TypeError,
     "optimizer\\(hp\\) must return an optax.GradientTransformation, got float"),
    (dict(hparams={"learning_rate": [0.1], "momentum": [0.0, 0.9]}, optimizer=sgd), ValueError,
     "the hyperparameter 'momentum' does not change what optimizer\\(hp\\) computes"),
    (dict(hparams={"label_smoothing": [0.1]}, loss_fn=lambda logits, labels: cross_entropy(logits, labels,
                                                                                          reduction="none")),
     ValueError, "hparams has 'label_smoothing' but loss_fn"),
])
def test_bad_population_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        _pop(**kwargs)


def test_dropout_rate_needs_a_model_with_a_traced_dropout_attribute():
    with pytest.raises(ValueError, match="hparams has 'dropout_rate' but the model Sequential has no 'dropout'"):
        fit(jnn.Sequential([jnn.Dense(CLASSES)]), TRAIN, epochs=1, batch_size=BATCH, optimizer=TX,
            hparams={"dropout_rate": [0.1]}, progress=False)

    class PythonBranch(flax_nn.Module):  # decides on its rate in Python: a traced rate cannot do that
        dropout: float = 0.1

        @flax_nn.compact
        def __call__(self, x, *, train, mask=None):
            x = jnn.Flatten()(x)
            if self.dropout > 0:
                x = jnn.Dropout(self.dropout)(x, train=train)
            return jnn.Dense(CLASSES)(x)

    with pytest.raises(ValueError, match="the model PythonBranch cannot take a traced dropout"):
        fit(PythonBranch(), TRAIN, epochs=1, batch_size=BATCH, optimizer=TX, hparams={"dropout_rate": [0.1]},
            progress=False)
    mlp = models.create("mlp", hidden=(8,), num_classes=CLASSES)  # the registry's MLP sweeps its rate
    _, history = fit(mlp, TRAIN, epochs=1, batch_size=BATCH, optimizer=TX, hparams={"dropout_rate": [0.0, 0.5]},
                     progress=False)
    assert history.train_loss[0][0] != history.train_loss[0][1]
