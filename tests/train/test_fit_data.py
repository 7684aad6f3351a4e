"""fit/evaluate check their data before compiling; drop_last=False keeps torch's last batch; training starts
from given weights; loss functions with or without `reduction`."""
import time

import jax
import numpy as np
import optax
import pytest

import jaxnets.nn as jnn
from jaxnets.data import steps_per_epoch
from jaxnets.layers import cross_entropy
from jaxnets.train import TrainState, evaluate, fit

CLASSES, N, BATCH = 3, 40, 8
MODEL = jnn.Sequential([jnn.Conv(4, 3, padding=1), jnn.BatchNorm(), jnn.ReLU(), jnn.GlobalAvgPool(),
                        jnn.Dense(CLASSES)])
TX = optax.sgd(0.05, momentum=0.9)


def _data(n: int, seed: int, size: int = 8) -> dict:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, CLASSES, n).astype(np.int32)
    image = rng.integers(0, 80, (n, size, size, 1)) + 80 * label[:, None, None, None]
    return {"image": image.astype(np.uint8), "label": label}


TRAIN, VAL = _data(N, 0), _data(12, 1)


def _fit(train=TRAIN, **kwargs):
    options = dict(val_data=VAL, epochs=1, batch_size=BATCH, optimizer=TX, seed=0, progress=False)
    return fit(MODEL, train, **{**options, **kwargs})


def _with(data, **arrays):
    return {**data, **arrays}


BAD_DATA = [
    ("train label = num_classes", dict(train=_with(TRAIN, label=np.where(TRAIN["label"] == 1, 3, TRAIN["label"]))),
     ValueError, r"train_data\['label'\] must be in \[0, 3\).*from 0 to 3"),
    ("train label -1", dict(train=_with(TRAIN, label=TRAIN["label"] - 1)), ValueError,
     r"train_data\['label'\] must be in \[0, 3\).*from -1"),
    ("val label out of range", dict(val_data=_with(VAL, label=VAL["label"] + 5)), ValueError,
     r"val_data\['label'\] must be in \[0, 3\)"),
    ("no channel axis", dict(train=_with(TRAIN, image=TRAIN["image"][..., 0])), ValueError,
     r"without a channel axis; add it with x\[\.\.\., None\]"),
    ("empty validation set", dict(val_data={k: v[:0] for k, v in VAL.items()}), ValueError,
     "val_data must hold at least one example"),
    ("validation images of another size", dict(val_data=_data(12, 1, size=12)), None, None),
    ("NCHW training images", dict(train=_with(TRAIN, image=np.zeros((N, 1, 16, 16), np.uint8))), ValueError,
     r"looks like NCHW.*transpose\(0, 2, 3, 1\)"),
    ("string labels", dict(train=_with(TRAIN, label=TRAIN["label"].astype(str))), TypeError,
     r"train_data\['label'\] must hold integer class indices, got dtype <U"),
    ("float images of another dtype", dict(train=_with(TRAIN, image=TRAIN["image"].astype(np.int64))), TypeError,
     r"train_data\['image'\] must have dtype uint8 or a floating dtype"),
]


@pytest.mark.parametrize("case, kwargs, error, match", BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_fit_rejects_bad_data_before_training(case, kwargs, error, match):
    if error is None:  # a global-average-pool model takes any image size: nothing to reject
        _fit(**kwargs)
        return
    started = time.perf_counter()
    with pytest.raises(error, match=match):
        _fit(**kwargs)
    assert time.perf_counter() - started < 30  # before an epoch of training (generous: a loaded CI machine)


def test_validation_images_a_fixed_size_model_cannot_take():
    model = jnn.Sequential([jnn.Flatten(), jnn.Dense(CLASSES)])
    with pytest.raises(ValueError, match=r"the model cannot take val_data\['image'\] of shape \(12, 12, 12, 1\) "
                                         r"\(it was initialised on inputs of shape \(8, 8, 1\)\)"):
        fit(model, TRAIN, val_data=_data(12, 1, size=12), epochs=1, batch_size=BATCH, optimizer=TX, progress=False)


def test_evaluate_checks_its_arguments():
    state, _ = _fit()
    with pytest.raises(TypeError, match="evaluate: state must be a jaxnets.train.TrainState.*got dict"):
        evaluate({"params": state.params}, VAL)
    with pytest.raises(ValueError, match=r"evaluate: data\['label'\] must be in \[0, 3\)"):
        evaluate(state, _with(VAL, label=VAL["label"] + 3))
    with pytest.raises(ValueError, match=r"looks like NCHW"):
        evaluate(state, _with(VAL, image=VAL["image"].transpose(0, 3, 1, 2)))


def test_drop_last_false_trains_the_partial_batch_as_torch_counts_it():
    n = 42  # 5 full batches of 8 and one of 2
    data = _data(n, 2)
    state, _ = _fit(train=data, epochs=2, drop_last=False, val_data=None)
    assert int(state.step) == 2 * steps_per_epoch(n, BATCH, drop_last=False) == 12
    dropped, _ = _fit(train=data, epochs=2, val_data=None)
    assert int(dropped.step) == 2 * steps_per_epoch(n, BATCH, drop_last=True) == 10
    # When the batch size divides N there is no partial batch: both settings train the same steps bitwise.
    even = _data(40, 3)
    a, _ = _fit(train=even, drop_last=False, val_data=None)
    b, _ = _fit(train=even, drop_last=True, val_data=None)
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_starts_from_given_weights_which_stay_readable():
    trained, _ = _fit()
    given = {"params": jax.tree.map(np.asarray, trained.params),
             "batch_stats": jax.tree.map(np.asarray, trained.batch_stats)}
    given_jax = jax.tree.map(jax.numpy.asarray, given)
    state, _ = fit(MODEL, TRAIN, epochs=1, batch_size=BATCH, optimizer=optax.sgd(0.0), progress=False,
                   initial_variables=given_jax)
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(given["params"])):
        np.testing.assert_array_equal(np.asarray(x), y)  # learning rate 0: the parameters are the given ones
    for leaf in jax.tree.leaves(given_jax):  # not donated away by the compiled steps
        assert not leaf.is_deleted()
    fresh = TrainState.create(MODEL, TX, TRAIN["image"][:1], 0)
    assert not np.array_equal(np.asarray(jax.tree.leaves(fresh.params)[0]),
                              np.asarray(jax.tree.leaves(state.params)[0]))


def test_loss_fn_with_or_without_reduction():
    reference, _ = _fit(epochs=1)
    plain, _ = _fit(epochs=1, loss_fn=lambda logits, labels: cross_entropy(logits, labels, reduction="none"))
    for x, y in zip(jax.tree.leaves(reference.params), jax.tree.leaves(plain.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(ValueError, match=r"loss_fn\(logits, labels\) must return per-example losses of shape "
                                         r"\(8,\), got \(\).*one loss per example"):
        _fit(loss_fn=lambda logits, labels: cross_entropy(logits, labels))


def test_float16_loss_scaler_owns_non_finite_steps():
    """An example that overflows float16 in the forward pass (1e5 > 65504) gives that batch an inf loss: the
    loss scaler skips the update, as torch.amp.GradScaler does, and fit trains on with a warning."""
    data = {"image": (TRAIN["image"] / 255.0).astype(np.float32), "label": TRAIN["label"]}
    data["image"][7] = 1e5
    with pytest.warns(RuntimeWarning, match=r"not finite in 1 of 5 steps of epoch 1 .*loss scaler skipped"):
        state, history = _fit(train=data, precision="float16", val_data=None)
    assert int(state.step) == 5 and np.isfinite(history.train_loss[0])
    assert all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(state.params))
    # Without a loss scaler the same run stops, naming the step.
    from jaxnets.train import NonFiniteLossError
    with pytest.raises(NonFiniteLossError, match="training loss is"):
        _fit(train={**data, "image": np.full_like(data["image"], np.inf)}, val_data=None)


@pytest.mark.parametrize("option, value, error", [("epochs", 1.5, TypeError), ("epochs", True, TypeError),
                                                   ("epochs", 0, ValueError), ("seed", 1.5, TypeError),
                                                   ("seed", True, TypeError), ("seed", -1, ValueError),
                                                   ("batch_size", 2.0, TypeError), ("drop_last", 1, TypeError)])
def test_fit_options_follow_the_error_rule(option, value, error):
    with pytest.raises(error, match=f"fit: {option} must be"):
        _fit(**{option: value})


@pytest.mark.slow  # heavy for the edit-test loop; the full suite runs it
def test_reduce_lr_on_plateau_driven_by_fit_matches_torch_and_resumes_bitwise(tmp_path):
    import torch

    from jaxnets.train import ReduceLROnPlateau, sgd

    def run(epochs, directory, resume=False):
        plateau = ReduceLROnPlateau(0.05, mode="max", factor=0.5, patience=0)  # "max" of a loss: reduce often
        tx = optax.chain(sgd(0.05, momentum=0.9), plateau.transform())
        return fit(MODEL, TRAIN, val_data=VAL, epochs=epochs, batch_size=BATCH, optimizer=tx, seed=0, progress=False,
                   learning_rate=0.05, plateau=plateau, checkpoint_dir=directory, resume=resume)

    state, history = run(4, tmp_path / "a")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.05)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
    expected = []
    for loss in history.val_loss:
        expected.append(opt.param_groups[0]["lr"])  # the rate the epoch trained with
        torch_plateau.step(loss)
    np.testing.assert_allclose(history.learning_rate, expected, rtol=1e-12)
    assert min(history.learning_rate) < 0.05  # the rule did reduce the rate

    run(2, tmp_path / "b")
    resumed, resumed_history = run(4, tmp_path / "b", resume=True)
    assert resumed_history.learning_rate == history.learning_rate
    for x, y in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with pytest.raises(TypeError, match="fit: plateau must be a jaxnets.train.ReduceLROnPlateau"):
        _fit(plateau="yes")


def test_a_trained_model_rejects_raw_uint8_images_naming_the_preprocessing():
    from jaxnets import data, models

    model = models.create("lenet5")
    state, _ = fit(model, {"image": np.zeros((16, 28, 28, 1), np.uint8), "label": np.arange(16) % 10}, epochs=1,
                   batch_size=8, optimizer=TX, progress=False)
    raw = np.full((2, 28, 28, 1), 255, np.uint8)
    with pytest.raises(TypeError, match=r"conv: x must be a floating-point array, got dtype uint8.*"
                                        r"jaxnets.data.to_float"):
        model.apply(state.variables, raw, train=False)
    assert model.apply(state.variables, data.to_float(raw), train=False).shape == (2, 10)
