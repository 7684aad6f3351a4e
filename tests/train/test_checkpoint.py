"""Checkpoints: bitwise round trip, the last N plus the best kept, a crash mid-save leaves the previous one usable,
damaged files detected (checksums) and reported as one CheckpointError, fallback to the last intact epoch."""
import json
import os
import time
import warnings

import jax
import numpy as np
import optax
import pytest
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity

import jaxnets.nn as jnn
from jaxnets.train.checkpoint import CHECKSUM_KEY, STATE_FIELDS, CheckpointError, Checkpoints
from jaxnets.train.optim import path_names
from jaxnets.train.state import TrainState

from _state_compare import assert_bitwise_equal, state_leaves


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


def test_read_only_leaves_unfinished_saves_alone(tmp_path):
    """A reader (load_run, `jaxnets-train evaluate`) must not delete another process's save in progress."""
    saved = _perturbed(_state(0), 1)
    with Checkpoints(tmp_path / "ck") as ck:
        ck.save(1, saved, meta={"epoch": 1}, best_rank=1)
    in_progress = tmp_path / "ck" / "2.orbax-checkpoint-tmp-1234"
    in_progress.mkdir()
    reader = Checkpoints(tmp_path / "ck", read_only=True)
    assert_bitwise_equal(saved, reader.restore(_state(5))[0])
    assert in_progress.is_dir() and reader.epochs() == [1]
    with pytest.raises(ValueError, match=r"Checkpoints.save: .* was opened with read_only=True"):
        reader.save(2, saved, meta={"epoch": 2}, best_rank=2)
    Checkpoints(tmp_path / "ck")  # a writer cleans up what a crashed save left
    # orbax removes it in a background thread (and awaits that before the writer's first save): wait up to 30 s
    deadline = time.monotonic() + 30
    while in_progress.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not in_progress.exists()
    with pytest.raises(TypeError, match="Checkpoints: read_only must be a Python bool"):
        Checkpoints(tmp_path / "ck", read_only=1)


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
    with pytest.raises(ValueError, match=r"Checkpoints: keep must be an int >= 1, got 0"):
        Checkpoints(tmp_path, keep=0)
    with pytest.raises(TypeError, match=r"Checkpoints: keep must be an int >= 1, got float 2.0"):
        Checkpoints(tmp_path, keep=2.0)
    with pytest.raises(TypeError, match=r"Checkpoints: keep must be an int >= 1, got str '3'"):
        Checkpoints(tmp_path, keep="3")
    with pytest.raises(TypeError, match=r"Checkpoints: keep must be an int >= 1, got bool True"):
        Checkpoints(tmp_path, keep=True)
    with pytest.raises(TypeError, match="Checkpoints: asynchronous must be a Python bool"):
        Checkpoints(tmp_path, asynchronous=1)
    with pytest.raises(TypeError, match="Checkpoints: directory must be a str or os.PathLike, got int 3"):
        Checkpoints(3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        Checkpoints(tmp_path / "file")
    ck = Checkpoints(tmp_path / "ck")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.restore(_state(0))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ck.restore_latest_intact(_state(0))
    with pytest.raises(ValueError, match=r"Checkpoints.save: epoch must be an int >= 1, got 0"):
        ck.save(0, _state(0), meta={}, best_rank=0)
    with pytest.raises(TypeError, match=r"Checkpoints.save: epoch must be an int >= 1, got str '3'"):
        ck.save("3", _state(0), meta={}, best_rank=0)
    with pytest.raises(TypeError, match=r"Checkpoints.save: best_rank must be an int, got float 1.0"):
        ck.save(1, _state(0), meta={}, best_rank=1.0)
    with pytest.raises(TypeError, match="Checkpoints.save: state must be a TrainState, got dict"):
        ck.save(1, {"params": 1}, meta={}, best_rank=0)
    with pytest.raises(TypeError, match=r"Checkpoints.save: meta must be a dict \(stored as JSON\), got list"):
        ck.save(1, _state(0), meta=[], best_rank=0)
    with pytest.raises(TypeError, match="Checkpoints.save: meta must be JSON-serialisable"):
        ck.save(1, _state(0), meta={"x": object()}, best_rank=0)
    with pytest.raises(ValueError, match=r"Checkpoints.save: meta may not use the key '__checksums__'"):
        ck.save(1, _state(0), meta={CHECKSUM_KEY: 1}, best_rank=0)
    with pytest.raises(ValueError, match=r"Checkpoints.save: meta\['epoch'\] is 2 but the checkpoint is epoch 1"):
        ck.save(1, _state(0), meta={"epoch": 2}, best_rank=0)
    ck.save(1, _state(0), meta={}, best_rank=0)
    ck.wait()
    with pytest.raises(ValueError, match="already saved"):
        ck.save(1, _state(0), meta={}, best_rank=0)
    with pytest.raises(TypeError, match="Checkpoints.restore: like must be a TrainState"):
        ck.restore({"params": 1})
    with pytest.raises(TypeError, match="Checkpoints.restore_latest_intact: like must be a TrainState"):
        ck.restore_latest_intact(None)
    with pytest.raises(TypeError, match=r"Checkpoints.restore: epoch must be an int >= 1, got str '1'"):
        ck.restore(_state(0), "1")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of epoch 2 .* saved epochs: \[1\]"):
        ck.meta(2)
    assert ck.meta() == {"epoch": 1}  # save records the epoch when meta leaves it out
    ck.close()


# ------------------------------------------------------------------------------------------------
# Damaged checkpoints
# ------------------------------------------------------------------------------------------------
def _wide_state(seed: int) -> TrainState:
    """A state whose Dense kernel (108 x 64 float32, 27 kB) makes orbax's data file the largest file."""
    model = jnn.Sequential([jnn.Conv(3, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(), jnn.Flatten(),
                            jnn.Dense(64), jnn.Dense(4)])
    return _perturbed(TrainState.create(model, TX, np.zeros((1, 6, 6, 2), np.float32), 0), seed)


def _names(tree) -> list[str]:
    return ["/".join(path_names(path)) for path, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _largest_state_file(epoch_dir) -> str:
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(epoch_dir, "state")) for name in names]
    return max(files, key=os.path.getsize)


def _saved(directory, epochs=(1,)) -> tuple[Checkpoints, dict]:
    """Save `_wide_state(e)` as each epoch in `epochs`; returns a fresh Checkpoints on the directory and the states."""
    states = {}
    with Checkpoints(directory) as ck:
        for epoch in epochs:
            states[epoch] = _wide_state(epoch)
            ck.save(epoch, states[epoch], meta={"epoch": epoch, "note": "x"}, best_rank=epoch)
    return Checkpoints(directory), states


def _flip(path: str, count: int, *, at: float = 0.5) -> None:
    """Invert `count` bytes of the file from the fraction `at` of its length on."""
    data = bytearray(open(path, "rb").read())
    start = int(at * (len(data) - count))
    data[start:start + count] = bytes(b ^ 0xFF for b in data[start:start + count])
    open(path, "wb").write(bytes(data))


def _edit_meta(epoch_dir, edit) -> None:
    path = os.path.join(epoch_dir, "meta", "metadata")
    meta = json.loads(open(path).read())
    edit(meta)
    open(path, "w").write(json.dumps(meta))


@pytest.mark.parametrize("count", [1, 64])
def test_flipped_bytes_in_the_data_file_are_detected(tmp_path, count):
    """Orbax's data files are zstd frames without a content checksum, and orbax writes the arrays into
    them concurrently (the layout varies between saves): a flipped byte mostly decodes to other values
    without complaint, sometimes breaks the frame. Several places in the largest file are tried; every
    one must give a CheckpointError, and at least one must be a silent change that only the checksums
    catch, naming the array that changed."""
    ck, states = _saved(tmp_path)
    big = _largest_state_file(ck.path(1))
    assert f"ocdbt.process_0{os.sep}d{os.sep}" in big  # orbax's OCDBT data file holds the arrays
    original = open(big, "rb").read()
    saved = {name: getattr(states[1], name) for name in STATE_FIELDS if getattr(states[1], name) is not None}
    names = [name for field in saved for name in _names({field: saved[field]})]  # state_leaves' order
    silent = 0
    for at in (0.5, 0.3, 0.7, 0.4, 0.6):
        open(big, "wb").write(original)
        _flip(big, count, at=at)
        try:  # orbax alone
            raw = ocp.StandardCheckpointer().restore(os.path.join(ck.path(1), "state"),
                                                     jax.tree.map(ocp.utils.to_shape_dtype_struct, saved))
        except Exception:  # a broken zstd frame: orbax notices, and Checkpoints wraps its error
            with pytest.raises(CheckpointError, match=r"epoch 1, .* has unreadable arrays under state/: "):
                ck.restore(_wide_state(0))
            continue
        changed = [name for name, a, b in zip(names, state_leaves(states[1]), state_leaves(states[1].replace(**raw)))
                   if not np.array_equal(a, b)]
        if not changed:  # the bytes were not array data
            assert_bitwise_equal(states[1], ck.restore(_wide_state(0))[0])
            continue
        silent += 1
        with pytest.raises(CheckpointError, match=rf"epoch 1, '.*{os.sep}1', is corrupted: the arrays? "
                                                  rf"{changed[0]}.* read from state/ (does|do) not match the "
                                                  rf"checksum") as info:
            ck.restore(_wide_state(0))
        assert info.value.epoch == 1 and info.value.path == ck.path(1)
        assert ck.meta() == {"epoch": 1, "note": "x"}  # the meta is intact: only the arrays were damaged
    assert silent >= 1  # orbax returned changed values without complaint at least once: the checksums caught it


def _assert_one_clean_error(info, ck: Checkpoints, epoch: int) -> None:
    """A CheckpointError naming the epoch directory, short, without orbax's TensorStore dump or advice."""
    error = info.value
    assert isinstance(error, ValueError) and error.epoch == epoch and error.path == ck.path(epoch)
    assert repr(ck.path(epoch)) in str(error)
    assert "\n" not in str(error) and len(str(error)) < 600, str(error)
    assert "TensorStore" not in str(error) and "partial_restore" not in str(error)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_truncated_or_missing_data_file_is_one_clear_error(tmp_path, damage):
    ck, _ = _saved(tmp_path)
    big = _largest_state_file(ck.path(1))
    if damage == "truncate":
        data = open(big, "rb").read()
        open(big, "wb").write(data[:len(data) // 2])
    else:
        os.remove(big)
    with pytest.raises(CheckpointError, match=r"epoch 1, .* has unreadable arrays under state/: ") as info:
        ck.restore(_wide_state(0))
    _assert_one_clean_error(info, ck, 1)
    assert info.value.__cause__ is not None  # orbax's exception, chained for debugging


def test_empty_epoch_directory_is_one_clear_error(tmp_path):
    ck, _ = _saved(tmp_path)
    os.makedirs(tmp_path / "2")
    ck = Checkpoints(tmp_path)
    assert ck.latest() == 2  # orbax lists it
    for call in (lambda: ck.restore(_wide_state(0)), ck.meta):
        with pytest.raises(CheckpointError, match=r"the checkpoint of epoch 2, .* is empty \(an incomplete or "
                                                  r"damaged checkpoint\)") as info:
            call()
        _assert_one_clean_error(info, ck, 2)
    os.rmdir(tmp_path / "2" )
    os.makedirs(tmp_path / "2" / "meta")
    with pytest.raises(CheckpointError, match=r"epoch 2, .* has no state/"):
        Checkpoints(tmp_path).restore(_wide_state(0))


@pytest.mark.parametrize("damage, message", [
    (lambda meta: meta.pop("epoch"), r"has a meta file '.*metadata' that does not match its checksum \(corrupted\)"),
    (lambda meta: meta.update(note="y"), r"that does not match its checksum"),
    (lambda meta: meta.pop(CHECKSUM_KEY) and meta.pop("epoch"), r"has a meta file '.*' without the 'epoch' it must "
                                                                r"record"),
    (lambda meta: meta.pop(CHECKSUM_KEY) and meta.update(epoch=5), r"that records epoch 5"),
    (lambda meta: meta[CHECKSUM_KEY].pop("arrays"), r"has a damaged checksum record in '.*metadata'"),
])
def test_damaged_meta_is_one_clear_error(tmp_path, damage, message):
    ck, _ = _saved(tmp_path)
    _edit_meta(ck.path(1), damage)
    for call in (lambda: ck.restore(_wide_state(0)), ck.meta):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the checkpoints without checksums warn that they are unverified
            with pytest.raises(CheckpointError, match=message) as info:
                call()
        _assert_one_clean_error(info, ck, 1)


@pytest.mark.parametrize("text", ['{"epoch": 1, "note": ', "\xff\xfe", ""])
def test_unreadable_meta_json_names_the_file(tmp_path, text):
    ck, _ = _saved(tmp_path)
    with open(os.path.join(ck.path(1), "meta", "metadata"), "w", encoding="latin-1") as f:
        f.write(text)
    with pytest.raises(CheckpointError, match=rf"has an unreadable meta file '.*{os.sep}1{os.sep}meta{os.sep}"
                                              rf"metadata': ") as info:
        ck.meta()
    _assert_one_clean_error(info, ck, 1)
    os.remove(os.path.join(ck.path(1), "meta", "metadata"))
    with pytest.raises(CheckpointError, match="has an unreadable meta file .* not found"):
        ck.restore(_wide_state(0))


def test_checkpoint_without_checksums_loads_with_one_warning(tmp_path):
    """Checkpoints saved before checksums existed (the meta holds only the caller's dict) still load."""
    ck, states = _saved(tmp_path, epochs=(1, 2))
    for epoch in (1, 2):
        _edit_meta(ck.path(epoch), lambda meta: meta.pop(CHECKSUM_KEY))
    with pytest.warns(UserWarning, match=r"Checkpoints: '.*' holds checkpoints saved without checksums \(by an older "
                                         r"jaxnets\); they are read without verification"):
        restored, meta = ck.restore(_wide_state(0))
    assert_bitwise_equal(states[2], restored)
    assert meta == {"epoch": 2, "note": "x"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per Checkpoints: no second warning
        assert_bitwise_equal(states[1], ck.restore(_wide_state(0), 1)[0])
        assert ck.meta(1) == {"epoch": 1, "note": "x"}


def test_checksums_are_recorded_in_the_meta_file(tmp_path):
    ck, states = _saved(tmp_path)
    on_disk = json.loads(open(os.path.join(ck.path(1), "meta", "metadata")).read())
    record = on_disk[CHECKSUM_KEY]
    assert record["format"] == 1 and len(record["meta"]) == 64
    arrays = record["arrays"]
    saved = {name: getattr(states[1], name) for name in STATE_FIELDS if getattr(states[1], name) is not None}
    assert sorted(arrays) == sorted(_names(saved))
    assert arrays["params/layers_4/kernel"]["shape"] == [108, 64] and arrays["rng"]["dtype"].startswith("key<")
    assert all(len(entry["sha256"]) == 64 for entry in arrays.values())
    assert len({entry["sha256"] for entry in arrays.values()}) > len(arrays) // 2  # digests of different arrays


def test_another_optimizer_or_model_says_so_with_working_advice(tmp_path):
    ck, _ = _saved(tmp_path)
    model = _wide_state(0).apply_fn.__self__
    sgd = TrainState.create(model, optax.sgd(0.1, momentum=0.9), np.zeros((1, 6, 6, 2), np.float32), 0)
    advice = "create the TrainState with the model, optimizer and precision the run was trained with"
    with pytest.raises(ValueError, match=r"does not fit the given state \(another model, optimizer or precision\): "
                                         r"arrays only in the checkpoint: opt_state/0/count, .* only in the given "
                                         r"state: opt_state/0/trace/layers_0/kernel.*" + advice) as info:
        ck.restore(sgd)
    assert not isinstance(info.value, CheckpointError) and "partial_restore" not in str(info.value)
    with pytest.raises(ValueError, match=r"params/layers_4/bias was saved as float32\[64\], the given state "
                                         r"has float32\[32\]"):
        ck.restore(_state_with_dense(32))
    with pytest.raises(ValueError, match="does not fit"):  # not a reason to fall back to an older epoch
        ck.restore_latest_intact(sgd)
    # A checkpoint without checksums: orbax's tree error, without its advice to pass partial_restore=True.
    _edit_meta(ck.path(1), lambda meta: meta.pop(CHECKSUM_KEY))
    with pytest.raises(ValueError, match=r"does not fit the given state \(another model, optimizer or precision\?\): "
                                         r".*" + advice) as info:
        ck.restore(sgd)
    assert not isinstance(info.value, CheckpointError) and "partial_restore" not in str(info.value)


def _state_with_dense(width: int) -> TrainState:
    model = jnn.Sequential([jnn.Conv(3, 3, padding=1, use_bias=False), jnn.BatchNorm(), jnn.ReLU(), jnn.Flatten(),
                            jnn.Dense(width), jnn.Dense(4)])
    return TrainState.create(model, TX, np.zeros((1, 6, 6, 2), np.float32), 0)


# ------------------------------------------------------------------------------------------------
# Fallback to the newest intact epoch
# ------------------------------------------------------------------------------------------------
def test_restore_latest_intact_falls_back_and_sets_the_damaged_epochs_aside(tmp_path):
    ck, states = _saved(tmp_path, epochs=(1, 2, 3))
    _flip(_largest_state_file(ck.path(3)), 64)
    open(os.path.join(ck.path(2), "meta", "metadata"), "w").write("{")
    seen = []
    with pytest.warns(UserWarning) as record:
        state, meta, skipped = ck.restore_latest_intact(_wide_state(0), check_meta=seen.append)
    messages = [str(w.message) for w in record]
    assert "epoch 3, " in messages[0] and "is corrupted: the array" in messages[0]
    assert messages[0].endswith("Skipping epoch 3; trying epoch 2.")
    assert "has an unreadable meta file" in messages[1] and messages[1].endswith("Skipping epoch 2; trying epoch 1.")
    assert messages[2] == (f"Checkpoints.restore_latest_intact: restored epoch 1 of {str(tmp_path)!r}; the damaged "
                           f"newer epochs were set aside as ['3.corrupt', '2.corrupt'].")
    assert_bitwise_equal(states[1], state)
    assert meta == {"epoch": 1, "note": "x"} and seen == [{"epoch": 3, "note": "x"}, meta]
    assert [error.epoch for error in skipped] == [3, 2] and all(isinstance(e, CheckpointError) for e in skipped)
    # The damaged epochs are kept for inspection, out of the way: the run saves epochs 2 and 3 again.
    assert ck.epochs() == [1] and sorted(os.listdir(tmp_path)) == ["1", "2.corrupt", "3.corrupt"]
    ck.save(2, states[2], meta={}, best_rank=2)
    ck.close()
    assert Checkpoints(tmp_path).epochs() == [1, 2]
    # An intact latest epoch: nothing skipped, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, meta, skipped = Checkpoints(tmp_path).restore_latest_intact(_wide_state(0))
    assert_bitwise_equal(states[2], state) and skipped == [] and meta == {"epoch": 2}


def test_restore_latest_intact_raises_the_newest_error_when_none_is_intact(tmp_path):
    ck, _ = _saved(tmp_path, epochs=(1, 2))
    for epoch in (1, 2):
        _flip(_largest_state_file(ck.path(epoch)), 1)
    with pytest.warns(UserWarning) as record:
        with pytest.raises(CheckpointError, match="epoch 2, .* is corrupted") as info:
            ck.restore_latest_intact(_wide_state(0))
    assert info.value.epoch == 2
    assert [str(w.message).split(". ")[-1] for w in record] == ["Skipping epoch 2; trying epoch 1.",
                                                                 "Skipping epoch 1."]
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # nothing set aside when nothing could be restored


def test_check_meta_errors_propagate_without_fallback(tmp_path):
    ck, _ = _saved(tmp_path, epochs=(1, 2))

    def refuse(meta):
        raise ValueError(f"run settings differ at epoch {meta['epoch']}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="run settings differ at epoch 2"):
            ck.restore_latest_intact(_wide_state(0), check_meta=refuse)
    assert ck.epochs() == [1, 2]
