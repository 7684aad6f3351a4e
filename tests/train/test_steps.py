"""Tests of jaxnets/train/state.py and jaxnets/train/steps.py (one device, small models from jaxnets.nn)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _tiny
import jaxnets.nn as jnn
from jaxnets.layers.losses import cross_entropy
from jaxnets.train.state import TrainState
from jaxnets.train.steps import make_eval_step, make_train_step

SHAPE = (4, 4, 1)
# Shared, so tests reuse compiled programs: jit caches on the step function and on the state's static
# fields, apply_fn (a bound method: equal only for the SAME model object) and tx.
TX = optax.sgd(0.1, momentum=0.9)  # torch.optim.SGD(lr=0.1, momentum=0.9); its first step is plain SGD
TRAIN, EVAL = jax.jit(make_train_step()), jax.jit(make_eval_step())
NET, NET_DROPOUT, NET_NO_BN = _tiny.SmallNet(), _tiny.SmallNet(dropout=0.5), _tiny.SmallNet(batch_norm=False)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def assert_trees_close(a, b, **tol):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, err_msg=jax.tree_util.keystr(path), **tol)


def new_state(model=NET, seed=0):
    return TrainState.create(model, TX, np.zeros((1,) + SHAPE, np.uint8), seed)


def batch(n=6, seed=0):
    return _tiny.data(1, n, seed=seed, shape=SHAPE)[0]


# ---- TrainState ----

def test_create_derives_everything_from_the_seed():
    model, tx = NET, TX
    state = TrainState.create(model, tx, np.zeros((1,) + SHAPE, np.uint8), 7)  # uint8: cast to float32
    init_key, rng = jax.random.split(jax.random.key(7))
    variables = model.init({"params": init_key}, jnp.zeros((1,) + SHAPE), train=False)
    assert leaves_equal(state.params, variables["params"])
    assert leaves_equal(state.batch_stats, variables["batch_stats"])
    np.testing.assert_array_equal(jax.random.key_data(state.rng), jax.random.key_data(rng))
    assert state.step.dtype == jnp.int32 and int(state.step) == 0
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(tx.init(variables["params"]))
    assert state.apply_fn == model.apply and state.tx is tx
    assert set(state.variables) == {"params", "batch_stats"}
    # The static fields are not leaves: the state is a pytree of arrays only.
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(state))


def test_create_without_batch_norm():
    state = new_state(NET_NO_BN)
    assert state.batch_stats == {} and set(state.variables) == {"params"}


def test_create_is_reproducible():
    a, b, c = new_state(seed=3), new_state(seed=3), new_state(seed=4)
    assert leaves_equal(a.params, b.params) and not leaves_equal(a.params, c.params)


class WithCache(nn.Module):
    @nn.compact
    def __call__(self, x, *, train):
        self.variable("cache", "last", jnp.zeros, (1,))
        return jnn.Dense(2)(jnn.Flatten()(x))


def test_create_errors():
    sample = np.zeros((1,) + SHAPE, np.uint8)
    with pytest.raises(TypeError, match=r"TrainState.create: model must be a flax.linen.Module, got function"):
        TrainState.create(lambda x: x, optax.sgd(0.1), sample, 0)
    with pytest.raises(TypeError, match=r"TrainState.create: optimizer must be an optax.GradientTransformation"):
        TrainState.create(_tiny.SmallNet(), "sgd", sample, 0)
    for seed in (1.5, True, None):
        with pytest.raises(TypeError, match=r"TrainState.create: seed must be an int"):
            TrainState.create(_tiny.SmallNet(), optax.sgd(0.1), sample, seed)
    with pytest.raises(ValueError, match=r"TrainState.create: the model creates variable collections \['cache'\]"):
        TrainState.create(WithCache(), optax.sgd(0.1), sample, 0)


# ---- the training step ----

def test_train_step_is_one_sgd_step_on_the_mean_loss():
    """Against a direct computation: mean cross-entropy, its gradient, one SGD update, BN statistics updated."""
    state, b = new_state(), batch(6)
    new, metrics = TRAIN(state, b)
    x = jnp.asarray(b["image"], jnp.float32) / 255.0

    def loss(params):
        logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                         mutable=["batch_stats"])
        return cross_entropy(logits, b["label"]), (logits, updates)

    grads, (logits, updates) = jax.jit(jax.grad(loss, has_aux=True))(state.params)
    assert_trees_close(new.params, jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads), rtol=1e-6, atol=1e-6)
    assert_trees_close(new.batch_stats, updates["batch_stats"], rtol=1e-6, atol=1e-6)
    assert not leaves_equal(new.batch_stats, state.batch_stats)
    assert int(new.step) == 1 and np.array_equal(jax.random.key_data(new.rng), jax.random.key_data(state.rng))
    # Metrics are sums: loss = sum of per-example losses, correct = top-1 hits, count = rows.
    np.testing.assert_allclose(metrics["loss"], jnp.sum(cross_entropy(logits, b["label"], reduction="none")),
                               rtol=1e-6)
    assert int(metrics["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == b["label"]))
    assert int(metrics["count"]) == 6
    assert metrics["loss"].dtype == jnp.float32 and metrics["correct"].dtype == metrics["count"].dtype == jnp.int32


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_unjitted_equals_jitted():
    """The step is a pure function: eager execution and jit agree (BN, dropout and momentum, 2 steps)."""
    step = make_train_step()
    eager = jitted = new_state(NET_DROPOUT)
    for i in range(2):
        eager, m_eager = step(eager, batch(6, seed=i))
        jitted, m_jit = TRAIN(jitted, batch(6, seed=i))
        # Fused (jit) and op-by-op (eager) float32 arithmetic may differ in the last bits; atol 1e-6 because
        # the Dense bias before BN has a true gradient of 0 and both runs compute rounding noise (~1e-7) for it.
        assert_trees_close(eager.params, jitted.params, rtol=1e-6, atol=1e-6)
        assert_trees_close(m_eager, m_jit, rtol=1e-6, atol=1e-6)
    assert_trees_close(eager.batch_stats, jitted.batch_stats, rtol=1e-6, atol=1e-6)
    assert_trees_close(eager.opt_state, jitted.opt_state, rtol=1e-6, atol=1e-6)


def test_loss_fn_options():
    """A loss with options (functools.partial) is used per example; metrics["loss"] is its sum."""
    state, b = new_state(NET_NO_BN), batch(6)
    loss_fn = functools.partial(cross_entropy, label_smoothing=0.2)
    _, metrics = jax.jit(make_train_step(loss_fn))(state, b)
    logits = state.apply_fn(state.variables, jnp.asarray(b["image"], jnp.float32) / 255.0, train=True)
    np.testing.assert_allclose(metrics["loss"], 6 * loss_fn(logits, b["label"]), rtol=1e-6)


def test_preprocess_and_augment_order_and_keys():
    """augment(key, raw images) runs first, with key = split(fold_in(rng, step))[0]; then preprocess."""
    seen = {}

    def augment(key, images):
        seen["key"], seen["dtype"] = key, images.dtype
        return images

    def preprocess(images):
        seen["preprocessed"] = images.dtype
        return images.astype(jnp.float32) / 255.0

    state = new_state().replace(step=jnp.int32(5))
    make_train_step(preprocess=preprocess, augment=augment)(state, batch())  # unjitted: the key is concrete
    expected = jax.random.split(jax.random.fold_in(state.rng, 5))[0]
    np.testing.assert_array_equal(jax.random.key_data(seen["key"]), jax.random.key_data(expected))
    assert seen["dtype"] == jnp.uint8 and seen["preprocessed"] == jnp.uint8


class DropoutProbe(nn.Module):
    """Dropout on the input, then a bias-free Dense: with a single all-ones example, row i of the kernel's
    gradient is zero exactly when input i was dropped, so the gradient reveals the dropout mask."""

    @nn.compact
    def __call__(self, x, *, train):
        return jnn.Dense(3, use_bias=False)(jnn.Dropout(0.5)(jnn.Flatten()(x), train=train))


PROBE = DropoutProbe()


def _dropout_mask(state):
    ones = {"image": np.ones((1,) + SHAPE, np.float32), "label": np.zeros(1, np.int32)}
    new, _ = TRAIN(state, ones)
    delta = new.params["Dense_0"]["kernel"] - state.params["Dense_0"]["kernel"]
    return np.any(np.asarray(delta) != 0, axis=1)


def test_dropout_masks_follow_the_step():
    state = new_state(PROBE)
    masks = [_dropout_mask(state.replace(step=jnp.int32(s))) for s in (0, 1, 0)]
    assert 0 < masks[0].sum() < masks[0].size  # some inputs kept, some dropped
    assert not np.array_equal(masks[0], masks[1])  # a new mask each step
    np.testing.assert_array_equal(masks[0], masks[2])  # the same step draws the same mask
    assert not np.array_equal(masks[0], _dropout_mask(new_state(PROBE, seed=1)))  # seed matters


def test_a_run_is_reproducible_from_its_seed():
    """Same seed: bitwise-equal parameters after 3 steps with dropout and BN; another seed differs."""
    def run(seed):
        state = new_state(NET_DROPOUT, seed)
        for i in range(3):
            state, _ = TRAIN(state, batch(6, seed=i))
        return state

    a, b, c = run(0), run(0), run(1)
    assert leaves_equal(a.params, b.params) and leaves_equal(a.batch_stats, b.batch_stats)
    assert not leaves_equal(a.params, c.params)


# ---- masks (padded batches) ----

def _pad(b, extra):
    """`b` with `extra` garbage rows (white images, out-of-range labels) and a mask excluding them."""
    return {"image": np.concatenate([b["image"], np.full((extra,) + SHAPE, 255, np.uint8)]),
            "label": np.concatenate([b["label"], np.full(extra, 99, np.int32)]),
            "mask": np.arange(len(b["label"]) + extra) < len(b["label"])}


class FlaxBN(nn.Module):
    """The same small net with Flax's own BatchNorm, which takes a mask broadcastable to its input."""

    @nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Dense(8)(jnn.Flatten()(x))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x, mask=None if mask is None else mask[:, None])
        return jnn.Dense(_tiny.NUM_CLASSES)(jnn.ReLU()(x))


@pytest.mark.parametrize("model", [NET, FlaxBN()], ids=["jaxnets_bn", "flax_bn"])
def test_padded_rows_contribute_nothing(model):
    """A masked, padded batch gives the step of its valid rows: loss, gradient, BN statistics, metrics."""
    state, b = new_state(model), batch(4)
    step = TRAIN
    want, want_metrics = step(state, b)
    got, got_metrics = step(state, _pad(b, 2))
    assert_trees_close(got.params, want.params, rtol=1e-6, atol=1e-6)
    assert_trees_close(got.batch_stats, want.batch_stats, rtol=1e-6, atol=1e-6)
    assert_trees_close(got_metrics, want_metrics, rtol=1e-6, atol=1e-6)
    assert int(got_metrics["count"]) == 4
    # Sensitivity: the same padded rows left unmasked change the BN statistics.
    unmasked, _ = step(state, {k: v for k, v in _pad(b, 2).items() if k != "mask"})
    assert max(np.max(np.abs(x - y)) for x, y in zip(jax.tree.leaves(unmasked.batch_stats),
                                                     jax.tree.leaves(want.batch_stats))) > 1e-3
    # Evaluation ignores the padded rows too.
    evaluate = EVAL
    assert_trees_close(evaluate(want, _pad(b, 2)), evaluate(want, b), rtol=1e-6, atol=1e-6)


def test_all_padding_batch_changes_nothing():
    state = new_state()  # the momentum buffer starts at 0, so a zero gradient gives a zero update
    b = dict(batch(6), mask=np.zeros(6, bool))
    new, metrics = TRAIN(state, b)
    assert leaves_equal(new.params, state.params) and leaves_equal(new.batch_stats, state.batch_stats)
    assert {k: float(metrics[k]) for k in ("loss", "correct", "count")} == {"loss": 0.0, "correct": 0.0, "count": 0.0}
    assert float(metrics["grad_norm"]) == 0.0 and float(metrics["update_norm"]) == 0.0


# ---- the evaluation step ----

def test_eval_step():
    state, b = TRAIN(new_state(), batch(6))[0], batch(6, seed=1)
    metrics = EVAL(state, b)
    logits = state.apply_fn(state.variables, jnp.asarray(b["image"], jnp.float32) / 255.0, train=False)
    np.testing.assert_allclose(metrics["loss"], jnp.sum(cross_entropy(logits, b["label"], reduction="none")),
                               rtol=1e-6)
    assert int(metrics["correct"]) == int(jnp.sum(jnp.argmax(logits, -1) == b["label"]))
    assert int(metrics["count"]) == 6
    # Eager equals jitted.
    assert_trees_close(make_eval_step()(state, b), metrics, rtol=1e-6, atol=1e-6)


# ---- errors ----

@pytest.mark.parametrize("make", [make_train_step, make_eval_step])
@pytest.mark.parametrize("bad, error, message", [
    ([1, 2], TypeError, r"batch must be a dict with 'image' \[N, H, W, C\] and 'label' \[N\] \(and optionally 'mask' \[N\]\), got list"),
    ({"image": np.zeros((2,) + SHAPE, np.uint8)}, ValueError, r"batch must be a dict .*got the keys \['image'\] \(missing \['label'\]\)"),
    ({"image": np.zeros((2,) + SHAPE, np.uint8), "label": np.zeros(3, np.int32)}, ValueError,
     r"batch\['label'\] must have shape \[N\] = \(2,\)"),
    ({"image": np.zeros((2,) + SHAPE, np.uint8), "label": np.zeros(2, np.float32)}, TypeError,
     r"batch\['label'\] must hold integer class indices"),
    ({"image": np.zeros((2,) + SHAPE, np.uint8), "label": np.zeros(2, np.int32), "mask": np.ones(3, bool)},
     ValueError, r"batch\['mask'\] must have shape \[N\] = \(2,\)"),
])
def test_bad_batches(make, bad, error, message):
    name = "train_step" if make is make_train_step else "eval_step"
    with pytest.raises(error, match=f"{name}: {message}"):
        make()(new_state(), bad)


def test_loss_fn_must_return_per_example_losses():
    with pytest.raises(ValueError, match=r"train_step: loss_fn\(logits, labels, reduction='none'\) must return "
                                         r"per-example losses of shape \(6,\), got \(\)"):
        make_train_step(lambda logits, labels, reduction: cross_entropy(logits, labels))(new_state(), batch(6))


def test_batch_norm_axis_must_match_the_step():
    """A model built for shard_map/pmap (BN axis_name="batch") under a plain step: refused with a clear error."""
    state = new_state(_tiny.SmallNet(axis_name="batch"))
    with pytest.raises(ValueError, match=r"train_step: BatchNorm 'BatchNorm_0' has axis_name='batch' but the step "
                                         r"runs with axis_name=None; create the model with axis_name=None"):
        make_train_step()(state, batch())


class RowMixer(nn.Module):
    """A BatchNorm whose input is not [N, ...]: the batch mask cannot apply to its statistics."""

    @nn.compact
    def __call__(self, x, *, train, mask=None):
        x = jnn.Flatten()(x).reshape(-1, 8)  # [N, 16] -> [2N, 8]
        return jnn.Dense(2)(jnn.BatchNorm()(x, train=train, mask=mask)).reshape(x.shape[0] // 2, 4)


def test_mask_with_a_batch_norm_not_over_the_batch_axis():
    state, b = new_state(RowMixer()), batch(4)
    with pytest.raises(ValueError, match=r"batch_norm: mask must have shape \[N\] = \(8,\) for x of shape "
                                         r"\(8, 8\), got \(4,\)"):
        make_train_step()(state, dict(b, mask=np.ones(4, bool)))


# ---- the mask reaches BatchNorm as an explicit keyword ----

class NoMaskBN(nn.Module):
    """A user's model with BatchNorm whose `__call__` has no `mask` keyword."""

    @nn.compact
    def __call__(self, x, *, train):
        return jnn.Dense(_tiny.NUM_CLASSES)(jnn.BatchNorm()(jnn.Dense(8)(jnn.Flatten()(x)), train=train))


class NoMaskNoBN(nn.Module):
    """A user's model without BatchNorm and without a `mask` keyword."""

    @nn.compact
    def __call__(self, x, *, train):
        return jnn.Dense(_tiny.NUM_CLASSES)(jnn.ReLU()(jnn.Dense(8)(jnn.Flatten()(x))))


@pytest.mark.parametrize("name, options", [("mlp", dict(hidden=(8, 8), batch_norm_layers=2)),
                                           pytest.param("resnet18", dict(variant="cifar", num_classes=_tiny.NUM_CLASSES),
                                                        marks=pytest.mark.slow)])
def test_registry_models_take_the_mask(name, options):
    """A registered model threads `mask` to its BatchNorm layers: padded + mask == the valid rows alone."""
    from jaxnets import models
    model = models.create(name, **options)
    shape = (8, 8, 3)
    state = TrainState.create(model, TX, np.zeros((1,) + shape, np.uint8), 0)
    b = _tiny.data(1, 4, shape=shape)[0]
    padded = {"image": np.concatenate([b["image"], np.full((2,) + shape, 255, np.uint8)]),
              "label": np.concatenate([b["label"], np.zeros(2, np.int32)]), "mask": np.arange(6) < 4}
    step = jax.jit(make_train_step())  # compiled: a ResNet-18 step runs op by op for tens of seconds otherwise
    want, want_metrics = step(state, b)
    got, got_metrics = step(state, padded)
    assert_trees_close(got.batch_stats, want.batch_stats, rtol=1e-5, atol=1e-6)
    assert_trees_close(got.params, want.params, rtol=1e-5, atol=1e-5)  # float32: other reduction orders
    assert_trees_close(got_metrics, want_metrics, rtol=1e-5, atol=1e-5)
    unmasked, _ = step(state, {k: v for k, v in padded.items() if k != "mask"})
    assert max(np.max(np.abs(x - y)) for x, y in zip(jax.tree.leaves(unmasked.batch_stats),
                                                     jax.tree.leaves(want.batch_stats))) > 1e-3


def test_a_model_without_mask_trains_without_padding():
    """A model of one's own without `mask`: trained without a mask, and, without BatchNorm, with one too."""
    state, b = new_state(NoMaskBN()), batch(4)
    new, metrics = make_train_step()(state, b)
    assert int(new.step) == 1 and int(metrics["count"]) == 4
    state = new_state(NoMaskNoBN())
    want, _ = make_train_step()(state, b)
    got, _ = make_train_step()(state, _pad(b, 2))
    assert_trees_close(got.params, want.params, rtol=1e-6, atol=1e-6)


def test_mask_for_a_model_with_batch_norm_but_no_mask_keyword():
    state, b = new_state(NoMaskBN()), batch(4)
    with pytest.raises(TypeError, match=r"train_step: the batch has a 'mask' \(padded rows\) but "
                                        r"NoMaskBN.__call__ takes no `mask` keyword.*add `mask=None` to "
                                        r"NoMaskBN.__call__"):
        make_train_step()(state, _pad(b, 2))


def test_sequential_passes_the_mask_to_batch_norm():
    """jnn.Sequential gives `mask` to the layers that take it (BatchNorm, a nested Sequential), not to others."""
    model = jnn.Sequential([jnn.Flatten(), jnn.Dense(8), jnn.Sequential([jnn.BatchNorm(), jnn.ReLU()]),
                            jnn.Dense(_tiny.NUM_CLASSES)])
    state, b = new_state(model), batch(4)
    want, _ = TRAIN(state, b)
    got, _ = TRAIN(state, _pad(b, 2))
    assert_trees_close(got.batch_stats, want.batch_stats, rtol=1e-6, atol=1e-6)
    assert_trees_close(got.params, want.params, rtol=1e-6, atol=1e-6)


# ---- the global norms the training step returns ----

def hand_norms(state, b, lr=0.1):
    """(grad norm, param norm after, update norm) by hand: jax.grad of the mean loss, optax.global_norm,
    one plain SGD step (TX's first step: the momentum buffer starts at 0)."""
    x = jnp.asarray(b["image"], jnp.float32) / 255.0

    def loss(params):
        logits, _ = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                   mutable=["batch_stats"])
        return cross_entropy(logits, b["label"])

    grads = jax.grad(loss)(state.params)
    new_params = jax.tree.map(lambda p, g: p - lr * g, state.params, grads)
    update = jax.tree.map(lambda p, g: -lr * g, state.params, grads)
    return tuple(float(optax.tree.norm(t)) for t in (grads, new_params, update))


def test_train_step_returns_the_global_norms():
    state, b = new_state(), batch(6)
    new, metrics = TRAIN(state, b)
    grad, param, update = hand_norms(state, b)
    np.testing.assert_allclose([float(metrics[k]) for k in ("grad_norm", "param_norm", "update_norm")],
                               [grad, param, update], rtol=1e-5)
    assert grad > 0 and update > 0
    np.testing.assert_allclose(float(metrics["param_norm"]), float(optax.tree.norm(new.params)), rtol=1e-6)
    assert all(metrics[k].dtype == jnp.float32 and metrics[k].shape == () for k in ("grad_norm", "param_norm"))


def test_norms_are_those_of_the_valid_rows():
    """Padded rows change nothing: the norms of a padded batch are those of its valid rows."""
    state, b = new_state(), batch(4)
    _, want = TRAIN(state, b)
    _, got = TRAIN(state, _pad(b, 2))
    for k in ("grad_norm", "param_norm", "update_norm"):
        np.testing.assert_allclose(float(got[k]), float(want[k]), rtol=1e-5, err_msg=k)


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_norms_in_float64(x64):
    state = TrainState.create(NET_NO_BN, TX, np.zeros((1,) + SHAPE, np.float64), 0)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), state.params)  # jnn layers create float32 params
    state = state.replace(params=params, opt_state=TX.init(params))
    _, metrics = make_train_step()(state, {"image": np.random.default_rng(0).random((4,) + SHAPE),
                                           "label": np.arange(4)})  # int64 under x64
    assert all(metrics[k].dtype == jnp.float64 for k in ("grad_norm", "param_norm", "update_norm"))


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_norms_under_vmap_of_the_step():
    """A population of states stepped by `jax.vmap` gets one norm per member, each that member's."""
    states = [new_state(seed=s) for s in (0, 1)]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    b = batch(6)
    _, metrics = jax.vmap(make_train_step(), in_axes=(0, None))(stacked, b)
    for i, state in enumerate(states):
        np.testing.assert_allclose(float(metrics["grad_norm"][i]), hand_norms(state, b)[0], rtol=1e-5)


def norms_in_modes(out: str) -> None:
    """Subprocess body (2 simulated CPU devices): one step of every data-parallel mode from the same state
    on the same 8 rows, its norms and the hand computation, saved to `out` (.npz)."""
    from jaxnets.train.parallel import MODES, compile_steps

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    b, results = batch(8), {}
    results["hand"] = np.array(hand_norms(new_state(), b))
    for mode in MODES:
        steps = compile_steps(mode, devices=jax.devices()[:1] if mode == "none" else jax.devices())
        state = steps.put_state(new_state(_tiny.SmallNet(axis_name=steps.axis_name)))
        _, metrics = steps.train(state, steps.put_batch(b))
        results[mode] = np.array([float(metrics[k]) for k in ("grad_norm", "param_norm", "update_norm")])
    np.savez(out, **results)


@pytest.mark.slow
def test_norms_in_every_parallel_mode(tmp_path):
    """Each mode's norms equal the hand computation: global, not summed over the 2 devices."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    here, out = Path(__file__).parent, tmp_path / "norms.npz"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join(p for p in (str(here.parent.parent), str(here.parent),
                                                      os.environ.get("PYTHONPATH")) if p))
    code = f"import test_steps; test_steps.norms_in_modes({str(out)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=here, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as results:
        assert set(results) == {"hand", "none", "sharded", "shard_map", "pmap"}
        for mode in ("none", "sharded", "shard_map", "pmap"):
            np.testing.assert_allclose(results[mode], results["hand"], rtol=1e-5, err_msg=mode)
