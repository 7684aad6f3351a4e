"""fit: bitwise resume, early stopping, non-finite loss, logs, History; recompute_batch_stats against numpy."""
import io
import json
import math
import os

import flax.linen as flax_nn
import jax
import numpy as np
import optax
import pytest

import jaxnets.nn as jnn
from jaxnets.data import Batches
from jaxnets.data.augment import random_flip
from jaxnets.train import schedules
from jaxnets.train.checkpoint import Checkpoints
from jaxnets.train.fit import EarlyStopping, History, NonFiniteLossError, evaluate, fit
from jaxnets.train.history import learning_rate_of
from jaxnets.train.optim import optimizer
from jaxnets.train.progress import ProgressBar, progress_enabled
from jaxnets.train.state import TrainState

from _state_compare import assert_bitwise_equal, state_leaves
from _tiny import brightness_data

CLASSES, N, BATCH = 3, 50, 8  # 6 batches per epoch; the last 2 examples of each epoch's order are dropped
STEPS_PER_EPOCH = N // BATCH
# One model object and one optimizer object for every run: fit reuses the compiled steps (same
# apply_fn and tx), so the module compiles the training step once (twice with float images).
MODEL = jnn.Sequential([jnn.Conv(4, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(),
                        jnn.GlobalAvgPool(), jnn.Dropout(0.25), jnn.Dense(CLASSES)])
SCHEDULE = schedules.cosine(0.1, 4, steps_per_epoch=STEPS_PER_EPOCH)
TX = optimizer("sgd", learning_rate=SCHEDULE, momentum=0.9)


def _data(n: int, seed: int) -> dict:
    return brightness_data(n, seed, classes=CLASSES, size=8)


TRAIN, VAL = _data(N, 0), _data(20, 1)


def _fit(**kwargs):
    options = dict(val_data=VAL, epochs=4, batch_size=BATCH, optimizer=TX, seed=3, augment=random_flip,
                   learning_rate=SCHEDULE, progress=False)
    return fit(MODEL, TRAIN, **{**options, **kwargs})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    directory = tmp_path_factory.mktemp("uninterrupted")
    state, history = _fit(checkpoint_dir=directory)
    return state, history, directory


def test_resume_ends_with_the_uninterrupted_parameters_bitwise(uninterrupted, tmp_path):
    reference, reference_history, _ = uninterrupted
    first, first_history = _fit(epochs=2, checkpoint_dir=tmp_path)
    assert len(first_history) == 2 and Checkpoints(tmp_path).latest() == 2
    state, history = _fit(epochs=4, checkpoint_dir=tmp_path, resume=True)
    assert int(state.step) == 4 * STEPS_PER_EPOCH
    assert_bitwise_equal(reference, state)
    for name in ("train_loss", "train_error", "val_loss", "val_error", "learning_rate"):
        assert getattr(history, name) == getattr(reference_history, name), name
    assert history.wall_time[:2] == first_history.wall_time  # continued from the checkpoint's history
    # The reference must not be trivially equal to the resumed run's start: training changed the parameters.
    assert not all(np.array_equal(a, b) for a, b in zip(state_leaves(first), state_leaves(state)))


def test_history_and_logs(uninterrupted):
    state, history, directory = uninterrupted
    assert len(history) == 4
    for name in History._LISTS:
        assert len(getattr(history, name)) == 4, name
    assert all(0.0 <= e <= 1.0 for e in history.train_error + history.val_error)
    assert all(v > 0 for v in history.images_per_sec)
    assert all(b > a for a, b in zip(history.wall_time, history.wall_time[1:]))
    # The rate of each epoch's last update (per-epoch cosine: the epoch's rate, as torch's get_last_lr()).
    np.testing.assert_allclose(history.learning_rate, [float(SCHEDULE(e * STEPS_PER_EPOCH - 1)) for e in (1, 2, 3, 4)],
                               rtol=1e-6)
    assert history.train_loss[-1] < history.train_loss[0]  # it learned something
    # The validation numbers are evaluate()'s on the final state (no early stopping: the last epoch).
    result = evaluate(state, VAL, batch_size=7)
    assert result["count"] == len(VAL["label"])
    np.testing.assert_allclose(result["loss"], history.val_loss[-1], rtol=1e-5)
    assert result["accuracy"] == pytest.approx(1.0 - history.val_error[-1])
    # history.json is the History; curves.png is a PNG; checkpoints: the last 3 (+ the best).
    text = (directory / "history.json").read_text()
    assert json.loads(text) == history.to_dict()
    assert History.from_json(text) == history
    assert (directory / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = Checkpoints(directory).epochs()
    assert saved[-3:] == [2, 3, 4] and history.best_epoch in saved
    assert history.best_epoch == 1 + int(np.argmin(history.val_loss))


def test_early_stopping_restores_the_best_epoch(tmp_path, capfd):
    # Validation labels are shifted: the better the model learns the training labels, the worse its
    # validation loss, so the best epoch is early and training stops `patience` epochs later.
    wrong = {"image": VAL["image"], "label": (VAL["label"] + 1) % CLASSES}
    stop = EarlyStopping(monitor="val_loss", patience=2)
    state, history = _fit(val_data=wrong, epochs=8, early_stopping=stop, checkpoint_dir=tmp_path, keep=1,
                          progress=True)
    assert history.stopped_early
    best = 1 + int(np.argmin(history.val_loss))
    assert history.best_epoch == best and len(history) == best + 2 < 8
    assert int(state.step) == best * STEPS_PER_EPOCH
    checkpoints = Checkpoints(tmp_path)
    assert checkpoints.epochs() == sorted({best, len(history)})  # keep=1: the last one and the best one
    restored, meta = checkpoints.restore(state, best)
    assert_bitwise_equal(restored, state)  # the returned state is the best epoch's, exactly
    assert meta["epoch"] == best
    assert capfd.readouterr().err == ""  # progress=True, but stderr is not a terminal: silent
    # Resuming a run that stopped early returns the best state again without training.
    again, again_history = _fit(val_data=wrong, epochs=8, early_stopping=stop, checkpoint_dir=tmp_path, keep=1,
                                resume=True)
    assert_bitwise_equal(again, state)
    assert len(again_history) == len(history)
    # Resuming it without early stopping trains on from the last epoch to `epochs`.
    epochs = len(history) + 2
    longer, longer_history = _fit(val_data=wrong, epochs=epochs, checkpoint_dir=tmp_path, keep=1, resume=True)
    assert len(longer_history) == epochs and not longer_history.stopped_early
    assert int(longer.step) == epochs * STEPS_PER_EPOCH


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    # Float images with one NaN example that the first epoch drops (incomplete last batch) and the
    # second epoch visits: epoch 1 completes and is checkpointed, epoch 2 fails at a known step.
    seed = 3
    order = [Batches(TRAIN, BATCH, seed=seed).order(e) for e in (0, 1)]
    dropped = [set(o[STEPS_PER_EPOCH * BATCH:]) for o in order]
    k = next(i for i in sorted(dropped[0]) if i not in dropped[1])
    batch = int(np.flatnonzero(order[1] == k)[0]) // BATCH
    images = TRAIN["image"].astype(np.float32) / 255
    images[k, 3, 4, 0] = np.nan
    with pytest.raises(NonFiniteLossError) as info:
        fit(MODEL, {"image": images, "label": TRAIN["label"]}, epochs=3, batch_size=BATCH, optimizer=TX, seed=seed,
            checkpoint_dir=tmp_path, progress=False)
    error = info.value
    step = STEPS_PER_EPOCH + batch
    assert (error.step, error.epoch, error.batch) == (step, 2, batch + 1)
    assert f"at step {step} (epoch 2, batch {batch + 1} of {STEPS_PER_EPOCH})" in str(error)
    assert error.checkpoint == os.path.join(str(tmp_path), "1") and repr(error.checkpoint) in str(error)
    checkpoints = Checkpoints(tmp_path)
    assert checkpoints.epochs() == [1]  # the last good checkpoint, not overwritten
    restored, meta = checkpoints.restore(TrainState.create(MODEL, TX, images[:1], seed))
    assert int(restored.step) == STEPS_PER_EPOCH and meta["epoch"] == 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((restored.params, restored.batch_stats)))
    assert len(History.from_json((tmp_path / "history.json").read_text())) == 1


def test_fit_and_evaluate_pass_compiler_options(uninterrupted):
    """An explicit options dict reaches compile_steps through fit's cache (as hashable items): the dict equal
    to what "auto" picks on CPU gives the uninterrupted run bitwise; evaluate with XLA's defaults runs."""
    from jaxnets.train.parallel import CPU_COMPILER_OPTIONS, default_compiler_options

    assert default_compiler_options() == CPU_COMPILER_OPTIONS
    state, _ = _fit(compiler_options=dict(CPU_COMPILER_OPTIONS))
    assert_bitwise_equal(uninterrupted[0], state)
    tuned, plain = evaluate(state, VAL), evaluate(state, VAL, compiler_options=None)
    assert tuned["count"] == plain["count"] == 20 and tuned["correct"] == plain["correct"]
    np.testing.assert_allclose(plain["loss"], tuned["loss"], rtol=1e-5)


def test_fit_errors(uninterrupted, tmp_path):
    with pytest.raises(ValueError, match="batch_size 51 is larger than the 50 training examples"):
        _fit(batch_size=51)
    with pytest.raises(ValueError, match="early_stopping monitors 'val_error' but val_data is None"):
        _fit(val_data=None, early_stopping=EarlyStopping("val_error"))
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        _fit(resume=True)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        _fit(epochs=0)
    with pytest.raises(TypeError, match="train_data must be a dict"):
        fit(MODEL, [1, 2], epochs=1, batch_size=2, optimizer=TX)
    directory = uninterrupted[2]
    with pytest.raises(ValueError, match="already holds checkpoints"):
        _fit(checkpoint_dir=directory)
    with pytest.raises(ValueError, match="different settings.*'seed': \\(3, 4\\)"):
        _fit(checkpoint_dir=directory, resume=True, seed=4)
    with pytest.raises(ValueError, match="patience must be an int >= 1"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="unknown monitor .accuracy."):
        EarlyStopping(monitor="accuracy")


def test_learning_rate_from_inject_hyperparams():
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(1.0, 0.0, 10))
    opt_state = tx.init({"w": np.zeros(2, np.float32)})
    assert learning_rate_of(None, opt_state, 0) == 1.0
    assert learning_rate_of(None, optax.sgd(0.1).init({"w": np.zeros(2)}), 0) is None
    assert learning_rate_of(0.25, None, 5) == 0.25


def test_progress_bar_draws_only_when_enabled():
    assert not progress_enabled(True, io.StringIO()) and not progress_enabled(False)
    stream = io.StringIO()
    bar = ProgressBar(4, epoch=2, epochs=5, enabled=True, stream=stream)
    bar.update(3, loss=0.5, accuracy=0.875, images_per_sec=1234.0)
    bar.close("val_loss=0.6000")
    out = stream.getvalue()
    assert "Epoch 2/5" in out and "loss=0.5000" in out and "acc=87.50%" in out and "val_loss=0.6000" in out
    silent = io.StringIO()
    bar = ProgressBar(4, epoch=1, epochs=1, enabled=False, stream=silent)
    bar.update(1, loss=1.0, accuracy=0.0, images_per_sec=1.0)
    bar.close("x")
    assert silent.getvalue() == ""


class NoMaskModel(flax_nn.Module):
    """A user's own Flax model with BatchNorm and no `mask` keyword."""

    @flax_nn.compact
    def __call__(self, x, *, train):
        x = jnn.BatchNorm()(jnn.Conv(2, 3, padding=1, use_bias=False)(x), train=train)
        return jnn.Dense(CLASSES)(jnn.GlobalAvgPool()(jnn.ReLU()(x)))


def test_a_model_without_a_mask_keyword_trains(tmp_path):
    """Full training batches need no mask: a model without the keyword trains; validation pads its last batch
    (evaluation mode, where BatchNorm needs no mask) and counts every example."""
    state, history = fit(NoMaskModel(), TRAIN, val_data=_data(13, 2), epochs=2, batch_size=BATCH,
                         optimizer=optax.sgd(0.05), progress=False, log_dir=tmp_path)
    assert len(history) == 2 and all(math.isfinite(v) for v in history.train_loss + history.val_loss)
    assert int(state.step) == 2 * STEPS_PER_EPOCH
    assert evaluate(state, _data(13, 2), batch_size=BATCH)["count"] == 13
    assert sorted(n for n in os.listdir(tmp_path) if not n.startswith("events.out.tfevents")) == ["curves.png", "history.json"]  # no temporary file left


def test_names_importable_from_fit_as_before():
    """fit.py was split by job; its public names still import from jaxnets.train.fit and jaxnets.train."""
    import importlib

    import jaxnets.train as train
    from jaxnets.train import batch_stats, evaluation, history

    fit_module = importlib.import_module("jaxnets.train.fit")  # the attribute jaxnets.train.fit is the function

    homes = {"History": history, "EarlyStopping": history, "NonFiniteLossError": history,
             "plot_history": history, "evaluate": evaluation, "recompute_batch_stats": batch_stats}
    for name, home in homes.items():
        assert getattr(fit_module, name) is getattr(home, name) is getattr(train, name)
    assert train.fit is fit_module.fit
