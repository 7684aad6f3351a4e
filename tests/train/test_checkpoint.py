"""Checkpoints: bitwise round trip, the last N plus the best kept, a crash mid-save leaves the previous one usable."""
import os

import jax
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.path import atomicity

import jaxnets.nn as jnn
from jaxnets.train.checkpoint import Checkpoints
from jaxnets.train.state import TrainState

from _state_compare import assert_bitwise_equal




def _model():
    return jnn.Sequential([jnn.Conv(3, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(),
                           jnn.GlobalAvgPool(), jnn.Dense(4)])


TX = optax.adam(1e-2)  # optimizer state: a NamedTuple with counts and moments


def _state(seed: int) -> TrainState:
    return TrainState.create(_model(), TX, np.zeros((1, 6, 6, 2), np.float32), seed)


def _perturbed(state: TrainState, seed: int) -> TrainState:
    """A state with every float leaf changed (as after some training), step and moments included."""
    rng = np.random.default_rng(seed)

    def bump(x):
        return x + rng.standard_normal(x.shape).astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else x

    return state.replace(step=state.step + 7 * seed, params=jax.tree.map(bump, state.params),
                         batch_stats=jax.tree.map(bump, state.batch_stats),
                         opt_state=jax.tree.map(bump, state.opt_state))


def test_round_trip_is_bitwise(tmp_path):
    saved = _perturbed(_state(0), 1)
    meta = {"epoch": 1, "history": {"loss": [1.5, None]}, "note": "x"}
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, saved, meta=meta, best_rank=1)
    restored, got = Checkpoints(tmp_path / "ck").restore(_state(5))
    assert_bitwise_equal(saved, restored)
    assert got == meta
    assert restored.apply_fn is not None and restored.tx is TX


def test_keeps_last_n_plus_best(tmp_path):
    ck = Checkpoints(tmp_path, keep=2)
    state = _state(0)
    # ranks: the caller raises the rank on each improvement; -1 marks an epoch that did not improve
    for epoch, rank in zip(range(1, 7), [1, 2, -1, -1, 3, -1]):
        ck.save(epoch, _perturbed(state, epoch), meta={"epoch": epoch}, best_rank=rank)
        ck.wait()
    ck.close()
    reopened = Checkpoints(tmp_path, keep=2)
    assert reopened.epochs() == [5, 6]  # epoch 5 is both the best and among the last two
    assert reopened.best() == 5 and reopened.latest() == 6
    ck = Checkpoints(tmp_path, keep=1)
    ck.save(7, _perturbed(state, 7), meta={"epoch": 7}, best_rank=-1)
    ck.close()
    assert Checkpoints(tmp_path).epochs() == [5, 7]  # the best survives although not among the last one
    restored, meta = Checkpoints(tmp_path).restore(state, 5)
    assert_bitwise_equal(_perturbed(state, 5), restored)
    assert meta == {"epoch": 5}
    assert sorted(os.listdir(tmp_path)) == ["5", "7"]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    state = _state(0)
    first = _perturbed(state, 1)
    ck = Checkpoints(tmp_path)
    ck.save(1, first, meta={"epoch": 1}, best_rank=1)
    ck.wait()

    # Simulate a crash after the arrays of epoch 2 are written but before the save is committed
    # (orbax's final rename of the temporary directory).
    async def crash(self):
        raise OSError("simulated crash during the save")

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash)
    with pytest.raises(Exception, match="simulated crash"):
        ck.save(2, _perturbed(state, 2), meta={"epoch": 2}, best_rank=2)
        ck.wait()
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith("2.")]
    assert leftovers and all("tmp" in name for name in leftovers), os.listdir(tmp_path)
    assert os.listdir(tmp_path / leftovers[0])  # the partial save wrote files
    monkeypatch.undo()

    # A restarted process sees epoch 1 only, restores it exactly, and can save epoch 2 again.
    again = Checkpoints(tmp_path)
    assert again.epochs() == [1] and again.latest() == 1
    restored, meta = again.restore(state)
    assert_bitwise_equal(first, restored)
    assert meta == {"epoch": 1}
    again.save(2, _perturbed(state, 2), meta={"epoch": 2}, best_rank=2)
    again.close()
    assert Checkpoints(tmp_path).epochs() == [1, 2]
    assert not [name for name in os.listdir(tmp_path) if "tmp" in name]  # the partial save was cleaned up


def test_restore_into_another_model_fails(tmp_path):
    with Checkpoints(tmp_path) as ck:
        ck.save(1, _state(0), meta={}, best_rank=1)
    other = TrainState.create(jnn.Sequential([jnn.Flatten(), jnn.Dense(3)]), TX, np.zeros((1, 6, 6, 2), np.float32), 0)
    with pytest.raises(ValueError, match="does not fit"):
        Checkpoints(tmp_path).restore(other)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="keep must be >= 1"):
        Checkpoints(tmp_path, keep=0)
    with pytest.raises(TypeError, match="keep must be an int"):
        Checkpoints(tmp_path, keep=2.0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        Checkpoints(tmp_path / "file")
    ck = Checkpoints(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.restore(_state(0))
    with pytest.raises(ValueError, match="epoch must be a positive int"):
        ck.save(0, _state(0), meta={}, best_rank=0)
    ck.save(1, _state(0), meta={}, best_rank=0)
    ck.wait()
    with pytest.raises(ValueError, match="already saved"):
        ck.save(1, _state(0), meta={}, best_rank=0)
    ck.close()
