"""TensorBoard event files (jaxnets/train/tensorboard.py and fit's writes), read back two ways: TensorBoard's own
`EventAccumulator` (where the `tensorboard` package is installed: the `test` extra installs it, without
TensorFlow) and the raw TFRecord framing decoded with tensorboardX's Event protobuf (needs tensorboardX only)."""
import importlib
import os
import shutil
import struct

import numpy as np
import pytest

pytest.importorskip("tensorboardX")

import jaxnets.nn as jnn  # noqa: E402
from jaxnets.train import tensorboard as tb  # noqa: E402
from jaxnets.train.fit import fit  # noqa: E402
from jaxnets.train.optim import optimizer  # noqa: E402

from _tiny import brightness_data  # noqa: E402

CLASSES, N, BATCH, LR = 3, 48, 8, 0.1  # 6 full batches per epoch
MODEL = jnn.Sequential([jnn.Flatten(), jnn.Dense(8), jnn.BatchNorm(), jnn.ReLU(), jnn.Dense(CLASSES)])
TX = optimizer("sgd", learning_rate=LR)  # plain SGD: every step's update norm is LR * its gradient norm
FLOAT32_VALUE = dict(rtol=1e-6, atol=0)  # event files store float32 scalars; History holds float64


def _data(n: int, seed: int) -> dict:
    return brightness_data(n, seed, classes=CLASSES, size=4)


TRAIN, VAL = _data(N, 0), _data(20, 1)


def _fit(**kwargs):
    options = dict(val_data=VAL, epochs=2, batch_size=BATCH, optimizer=TX, seed=0, learning_rate=LR, progress=False)
    return fit(MODEL, TRAIN, **{**options, **kwargs})


def _records(path: str) -> list[bytes]:
    """The payloads of a TFRecord file: [uint64 length][uint32 crc][data][uint32 crc] each."""
    raw, out, i = open(path, "rb").read(), [], 0
    while i < len(raw):
        (length,) = struct.unpack("<Q", raw[i:i + 8])
        out.append(raw[i + 12:i + 12 + length])
        i += 12 + length + 4
    assert i == len(raw)
    return out


def read_records(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file, in file order, a later START purging as TensorBoard does."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    scalars: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(n for n in os.listdir(log_dir) if n.startswith("events.out.tfevents")):
        for payload in _records(os.path.join(log_dir, name)):
            event = Event.FromString(payload)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                scalars = {t: [(s, v) for s, v in pts if s < event.step] for t, pts in scalars.items()}
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def read_tensorboard(log_dir) -> dict[str, list[tuple[int, float]]]:
    """The same through TensorBoard's own reader."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir), size_guidance={accumulator.SCALARS: 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(params=["tensorboard", "records"])
def read(request):
    return read_tensorboard if request.param == "tensorboard" else read_records


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch run refreshing after every step (so every step is a logging point)."""
    log_dir = tmp_path_factory.mktemp("tb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.import_module("jaxnets.train.fit"), "_REFRESH_SECONDS", 0.0)
        _, history = _fit(log_dir=log_dir)
    return log_dir, history


def test_fit_writes_every_tag(run, read):
    log_dir, history = run
    scalars = read(log_dir)
    expected = {"train/loss", "train/error", "norm/grad", "norm/param", "norm/update", "epoch/epoch",
                *tb.EPOCH_TAGS.values()}
    assert set(scalars) == expected
    assert (log_dir / "history.json").exists()  # the other logs still there


def test_epoch_values_are_the_history(run, read):
    log_dir, history = run
    scalars = read(log_dir)
    ends = [STEPS * (e + 1) for e in range(2)]
    assert scalars["epoch/epoch"] == [(ends[0], 1.0), (ends[1], 2.0)]
    for key, tag in tb.EPOCH_TAGS.items():
        steps, values = zip(*scalars[tag])
        assert list(steps) == ends, tag
        np.testing.assert_allclose(values, getattr(history, key), **FLOAT32_VALUE, err_msg=tag)


STEPS = N // BATCH


def test_step_values_average_to_the_epoch_loss(run, read):
    """Every step is a point (refresh after each one): steps 1..12 once each; an epoch's points average to
    its training loss and error (equal batches), and every update norm is LR times the gradient norm."""
    log_dir, history = run
    scalars = read(log_dir)
    for tag in ("train/loss", "train/error", "norm/grad", "norm/param", "norm/update"):
        assert [s for s, _ in scalars[tag]] == list(range(1, 2 * STEPS + 1)), tag
    for epoch in range(2):
        window = slice(epoch * STEPS, (epoch + 1) * STEPS)
        losses = [v for _, v in scalars["train/loss"][window]]
        errors = [v for _, v in scalars["train/error"][window]]
        np.testing.assert_allclose(np.mean(losses), history.train_loss[epoch], rtol=1e-6)
        np.testing.assert_allclose(np.mean(errors), history.train_error[epoch], rtol=1e-6, atol=1e-7)
    grad, update = (np.array([v for _, v in scalars[t]]) for t in ("norm/grad", "norm/update"))
    np.testing.assert_allclose(update, LR * grad, rtol=1e-5)
    assert np.all(grad > 0) and np.all(np.array([v for _, v in scalars["norm/param"]]) > 0)


def test_a_resumed_run_has_one_value_per_step(tmp_path, read):
    """Epoch 2 logged, its checkpoint lost, the run resumed from epoch 1: TensorBoard shows epoch 2 once."""
    _, first = _fit(checkpoint_dir=tmp_path, keep=5)
    shutil.rmtree(tmp_path / "2")  # as if the run had died before saving epoch 2
    _, history = _fit(checkpoint_dir=tmp_path, keep=5, resume=True)
    scalars = read(tmp_path)
    assert [s for s, _ in scalars["epoch/train_loss"]] == [STEPS, 2 * STEPS]
    np.testing.assert_allclose([v for _, v in scalars["epoch/train_loss"]], history.train_loss, **FLOAT32_VALUE)
    steps = [s for s, _ in scalars["train/loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == 2 * STEPS
    assert len([n for n in os.listdir(tmp_path) if n.startswith("events.out.tfevents")]) == 2


def test_tensorboard_false_and_without_tensorboardx(tmp_path, monkeypatch):
    _fit(log_dir=tmp_path / "off", epochs=1, tensorboard=False)
    assert os.listdir(tmp_path / "off") and not [n for n in os.listdir(tmp_path / "off") if "tfevents" in n]
    monkeypatch.setattr(tb, "tensorboard_available", lambda: False)
    _, history = _fit(log_dir=tmp_path / "missing", epochs=1)  # default None: trains, writes no events
    assert len(history) == 1 and not [n for n in os.listdir(tmp_path / "missing") if "tfevents" in n]
    with pytest.raises(ImportError, match=r"fit: tensorboard=True needs tensorboardX, which is not installed; pip "
                                          r"install tensorboardX"):
        _fit(log_dir=tmp_path / "required", epochs=1, tensorboard=True)


def test_tensorboard_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"fit: tensorboard=True needs a directory for the event files; pass "
                                         r"log_dir="):
        _fit(epochs=1, tensorboard=True)
    for bad in (1, "yes"):
        with pytest.raises(TypeError, match=r"fit: tensorboard must be None \(write where tensorboardX is "
                                            r"installed\), True or False, got"):
            _fit(log_dir=tmp_path, epochs=1, tensorboard=bad)
    with pytest.raises(TypeError, match=r"TensorBoardLog: purge_step must be an int"):
        tb.TensorBoardLog(tmp_path, purge_step=1.5)
    with pytest.raises(ValueError, match=r"TensorBoardLog: purge_step must be an int >= 0"):
        tb.TensorBoardLog(tmp_path, purge_step=-1)


def test_tensorboard_log_steps_by_hand(tmp_path):
    """A point is the mean over the finite steps since the last one; the norms are the last step's."""
    with tb.TensorBoardLog(tmp_path) as log:
        log.steps([{"loss": 6.0, "correct": 1, "count": 4, "grad_norm": 9.0},
                   {"loss": float("nan"), "correct": 4, "count": 4, "grad_norm": 1.0},
                   {"loss": 2.0, "correct": 3, "count": 4, "grad_norm": 2.0, "param_norm": 3.0,
                    "update_norm": 0.5}], last_step=3)
        log.steps([], last_step=4)  # nothing new: nothing written
        log.steps([{"loss": 0.0, "correct": 0, "count": 0}], last_step=5)  # no valid row: no loss point
    scalars = read_records(tmp_path)
    assert scalars == {"train/loss": [(3, 1.0)], "train/error": [(3, 0.5)], "norm/grad": [(3, 2.0)],
                       "norm/param": [(3, 3.0)], "norm/update": [(3, 0.5)]}


def test_cli_writes_event_files(tmp_path):
    from jaxnets.train.cli import main

    out = tmp_path / "run"
    assert main(["--epochs", "1", "--out", str(out), "--subset", "200", "--batch-size", "30", "--no-progress"]) == 0
    scalars = read_records(out)
    assert {"train/loss", "norm/grad", "epoch/val_loss"} <= set(scalars)
    assert len(scalars["epoch/val_loss"]) == 1


def test_two_writers_in_one_second_keep_both_files(tmp_path):
    """tensorboardX names files by the second; a resume within it must not overwrite the first run's file."""
    from jaxnets.train.tensorboard import TensorBoardLog

    for purge_step in (0, 3):
        with TensorBoardLog(tmp_path, purge_step=purge_step):
            pass
    names = sorted(n for n in os.listdir(tmp_path) if n.startswith("events.out.tfevents"))
    assert len(names) == 2 and names[0] < names[1]
