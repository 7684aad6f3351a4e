"""fit, evaluate, tta_predict and ensemble_predict on sources (ImageFolder, ArraySource) read through a Grain
Loader: the same numbers as the in-memory path, and `checkpoint_every`'s mid-epoch resume, bit for bit."""
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

import jaxnets.nn as jnn
from jaxnets import data
from jaxnets.data.augment import hflip, random_flip
from jaxnets.train.checkpoint import Checkpoints
from jaxnets.train.evaluation import ensemble_predict, evaluate, tta_predict
from jaxnets.train.fit import fit
from jaxnets.train.optim import optimizer

from _state_compare import assert_bitwise_equal, state_leaves
from _tiny import brightness_data

CLASSES, N, BATCH, SEED = 3, 50, 8, 3  # 6 steps per epoch
MODEL = jnn.Sequential([jnn.Conv(4, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(),
                        jnn.GlobalAvgPool(), jnn.Dropout(0.25), jnn.Dense(CLASSES)])
TX = optimizer("sgd", learning_rate=0.05, momentum=0.9)
HISTORY = ("train_loss", "train_error", "val_loss", "val_error")


def _data(n: int, seed: int) -> dict:
    return brightness_data(n, seed, classes=CLASSES, size=8)


TRAIN, VAL = _data(N, 0), _data(20, 1)


def _fit(train_data, **kwargs):
    options = dict(val_data=VAL, epochs=2, batch_size=BATCH, optimizer=TX, seed=SEED, augment=random_flip,
                   progress=False)
    return fit(MODEL, train_data, **{**options, **kwargs})


def _folder(root, arrays) -> dict:
    """Write `arrays` as root/<class>/<index>.png; return them in the folder's (torchvision's) order."""
    for i, (image, label) in enumerate(zip(arrays["image"], arrays["label"])):
        os.makedirs(root / f"class{label}", exist_ok=True)
        Image.fromarray(image[..., 0]).save(root / f"class{label}" / f"{i:03d}.png")
    order = np.lexsort((np.arange(len(arrays["label"])), arrays["label"]))  # by class, then by file name
    return {key: value[order] for key, value in arrays.items()}


class Crashing(data.ArraySource):
    """An ArraySource that raises the second time example `fail` is read: a run killed in its second epoch
    (each epoch reads each example once; the Loader's threads read ahead, so the first epoch's end cannot be
    the trigger)."""

    def __init__(self, *args, fail: int | None = None):
        super().__init__(*args)
        self.fail, self.reads, self.lock = fail, 0, threading.Lock()

    def __getitem__(self, index):
        if int(index) == self.fail:
            with self.lock:
                self.reads += 1
                if self.reads == 2:
                    raise RuntimeError(f"simulated crash reading example {index}")
        return super().__getitem__(index)


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("npy")
    np.save(directory / "x.npy", TRAIN["image"])
    np.save(directory / "y.npy", TRAIN["label"])
    return directory


@pytest.fixture(scope="module")
def uninterrupted():
    return _fit(TRAIN)


def test_fit_and_evaluate_on_image_folders_equal_the_in_memory_path(tmp_path):
    train, val = _folder(tmp_path / "train", TRAIN), _folder(tmp_path / "val", VAL)
    reference, reference_history = _fit(train, val_data=val)
    state, history = _fit(data.ImageFolder(tmp_path / "train"), val_data=data.ImageFolder(tmp_path / "val"))
    assert_bitwise_equal(reference, state)
    for name in HISTORY:
        assert getattr(history, name) == getattr(reference_history, name), name
    result = evaluate(state, data.ImageFolder(tmp_path / "val"), batch_size=7)
    assert result == evaluate(state, val, batch_size=7) and result["count"] == 20


def test_predictions_on_a_source_equal_those_on_arrays(npy, uninterrupted):
    state, _ = uninterrupted
    source = data.ArraySource(npy / "x.npy", npy / "y.npy")
    apply = lambda variables, x, train: MODEL.apply(variables, x.astype(np.float32) / 255, train=train)  # noqa: E731
    flip = lambda x: x[:, :, ::-1]  # noqa: E731  (numpy images: hflip's axis)
    expected = tta_predict(apply, state.variables, TRAIN["image"], transforms=(lambda x: x, flip))
    got = tta_predict(apply, state.variables, source, transforms=(lambda x: x, flip), batch_size=16)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)  # float32: other batch sizes
    members = [(apply, state.variables), (lambda v, x, train: apply(v, hflip(x), train), state.variables)]
    np.testing.assert_allclose(ensemble_predict(members, source, weights=[1.0, 3.0], batch_size=16),
                               ensemble_predict(members, TRAIN["image"], weights=[1.0, 3.0]), rtol=1e-6, atol=1e-7)


def test_mid_epoch_resume_after_a_crash_is_bitwise(npy, tmp_path, uninterrupted):
    """Checkpoints every 4 steps; the run dies at batch 5 of epoch 2 (after step 10; the checkpoint of step 8
    is saved); the resumed run continues at epoch 2, batch 3 and ends with the uninterrupted state."""
    reference, reference_history = uninterrupted
    loader = data.Loader(data.ArraySource(npy / "x.npy", npy / "y.npy"), BATCH, seed=SEED)
    # An example of epoch 2's fifth batch that epoch 1 reads too (48 of the 50 examples are used per epoch).
    fail = next(i for i in loader.order(1)[4 * BATCH:5 * BATCH].tolist() if i in loader.order(0)[:6 * BATCH] and i)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit(Crashing(npy / "x.npy", npy / "y.npy", fail=fail), checkpoint_dir=tmp_path, checkpoint_every=4)
    assert Checkpoints(tmp_path).epochs() == [1]
    assert Checkpoints(tmp_path / "mid_epoch").epochs() == [8]  # keep=1: step 4's was replaced
    resumed = data.ArraySource(npy / "x.npy", npy / "y.npy")
    state, history = _fit(resumed, checkpoint_dir=tmp_path, checkpoint_every=4, resume=True)
    assert int(state.step) == 12
    assert_bitwise_equal(reference, state)
    for name in HISTORY:
        assert getattr(history, name) == getattr(reference_history, name), name
    # The mid-epoch checkpoint held a state that differs from both the start and the end: it was used.
    mid, _ = Checkpoints(tmp_path / "mid_epoch").restore(reference, 8)
    assert not all(np.array_equal(a, b) for a, b in zip(state_leaves(mid), state_leaves(state)))


def test_mid_epoch_resume_of_in_memory_data_is_bitwise(tmp_path, uninterrupted):
    """A dict's Batches skips the batches before the saved position. The crash is simulated by removing what
    the run wrote after its step-8 checkpoint (epoch 2's checkpoint)."""
    reference, reference_history = uninterrupted
    _fit(TRAIN, checkpoint_dir=tmp_path, checkpoint_every=4)
    shutil.rmtree(tmp_path / "2")
    state, history = _fit(TRAIN, checkpoint_dir=tmp_path, checkpoint_every=4, resume=True)
    assert_bitwise_equal(reference, state)
    for name in HISTORY:
        assert getattr(history, name) == getattr(reference_history, name), name


def test_checkpoint_every_errors(tmp_path):
    with pytest.raises(ValueError, match="fit: checkpoint_every=4 needs checkpoint_dir"):
        _fit(TRAIN, checkpoint_every=4)
    with pytest.raises(TypeError, match="fit: checkpoint_every must be"):
        _fit(TRAIN, checkpoint_every=2.0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="fit: checkpoint_every must be"):
        _fit(TRAIN, checkpoint_every=0, checkpoint_dir=tmp_path)
    _fit(TRAIN, epochs=1, checkpoint_every=4, checkpoint_dir=tmp_path)
    shutil.rmtree(tmp_path / "1")  # only the mid-epoch checkpoint is left
    with pytest.raises(ValueError, match="fit: checkpoint_dir holds mid-epoch checkpoints .* pass resume=True"):
        _fit(TRAIN, epochs=1, checkpoint_every=4, checkpoint_dir=tmp_path)
