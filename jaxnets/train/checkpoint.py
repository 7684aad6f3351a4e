"""Checkpoints of a training run with orbax-checkpoint: atomic, verified, with a fallback to the last intact epoch.

A run directory holds one sub-directory per saved epoch (`<directory>/<epoch>/`), each with two items:

    state/   the TrainState's arrays: step, params, batch_stats, opt_state, rng, and loss_scale when the
             state has one (float16 training; a state without one is saved exactly as before)
    meta/    JSON: the completed epoch, the History so far, whatever else the caller stores, and under
             the reserved key "__checksums__" the SHA-256 of every saved array and of the rest of the meta

What is guaranteed:

- Atomic (orbax's): an epoch is written to a temporary directory `<epoch>.orbax-checkpoint-tmp-<timestamp>`
  and renamed to `<epoch>` only when every file is written (and `commit_success.txt` inside it), so a
  crash during a save leaves the previous epochs untouched and only an unfinished temporary directory
  behind, which `latest()`/`restore()` ignore and the next `Checkpoints` on the directory deletes.
- Verified: `save` records each array's dtype, shape and SHA-256 (of its bytes, computed on the host from
  the snapshot being saved) and a SHA-256 of the meta; `restore` and `meta` check them, so a flipped,
  truncated or missing file, an empty epoch directory or a meta without its "epoch" raises
  `CheckpointError` (a ValueError naming the epoch directory and what is wrong) instead of returning
  wrong numbers. Orbax and TensorStore read errors are wrapped in it (chained, not dumped in the
  message). Checkpoints written before checksums existed still load, with a warning that they are not
  verified. A state of another model, optimizer or precision raises a ValueError that says so.
- Fallback: `restore_latest_intact` reads the newest epoch that passes the checks, warning about each
  newer one it skips and setting those aside (renamed `<epoch>.corrupt`) so the run can save them again.

Saves are asynchronous by default: `save` returns once the arrays are snapshotted (a device copy, so
the training step may donate the state's buffers right away) and hashed on the host, and the files are
written in a background thread; `wait()` blocks until they are on disk.

Preservation: after each save, orbax keeps the `keep` most recent epochs and the best one, where
"best" is the epoch saved with the highest `best_rank` (the caller raises the rank each time its
monitored metric improves; see `jaxnets.train.fit`), so ties and `min_delta` follow the caller's rule.

Multi-process runs: every process must construct the `Checkpoints` and call `save`/`restore` (orbax
synchronises them and writes each array once: the primary process, process 0, writes the metadata
and the replicated arrays). Checksums cover arrays that are fully replicated or fully addressable (a
training state always is: `CompiledSteps.get_state` gives one copy); an array sharded across processes
is saved and restored unverified. Logs other than checkpoints are written by process 0 only (`fit`).

PyTorch: `torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), ...}, path)`, with
the atomic write, the retention policy and any verification done by hand.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from jaxnets.checks import check_bool, check_int
from jaxnets.train.optim import path_names
from jaxnets.train.state import TrainState

__all__ = ["Checkpoints", "CheckpointError", "STATE_FIELDS", "CHECKSUM_KEY", "snapshot"]

# The TrainState fields that are saved (apply_fn and tx are code: the caller supplies them again);
# loss_scale only when it is not None.
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng", "loss_scale")
# The meta key under which `save` records the checksums (reserved: a caller's meta may not use it).
CHECKSUM_KEY = "__checksums__"
_FORMAT = 1  # version of the CHECKSUM_KEY record
_ITEMS = ("state", "meta")
_MISMATCH_ADVICE = ("create the TrainState with the model, optimizer and precision the run was trained with "
                    "(the same TrainState.create arguments), or use another checkpoint directory")


class CheckpointError(ValueError):
    """A saved epoch that cannot be used: a file corrupted, truncated or missing, or its metadata unreadable.

    Attributes:
      epoch: the epoch whose checkpoint failed.
      path: that epoch's directory (`Checkpoints.path(epoch)`).
    """

    def __init__(self, message: str, *, epoch: int, path: str):
        super().__init__(message)
        self.epoch, self.path = epoch, path


def _saved_fields(state: TrainState) -> dict:
    return {name: getattr(state, name) for name in STATE_FIELDS if getattr(state, name) is not None}


def _best_rank(metrics: dict) -> float:
    return float(metrics["best_rank"])


def snapshot(tree):
    """A device copy of every array of `tree` (same shardings), safe to keep while the original is donated."""
    return jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), tree)


def _named_leaves(fields: dict) -> dict[str, Any]:
    """`{"step": array, "params/Conv_0/kernel": array, ...}`: every leaf of the saved fields under its path
    of names, in the order of STATE_FIELDS (so messages name params before the optimizer's moments)."""
    return {"/".join(path_names(path)): leaf for name in STATE_FIELDS if name in fields
            for path, leaf in jax.tree_util.tree_leaves_with_path({name: fields[name]})}


def _host_bytes(x) -> np.ndarray | None:
    """The bytes of `x` as a flat uint8 host array, or None when this process cannot see all of it."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array):
        if x.is_fully_replicated:
            x = x.addressable_data(0)  # one copy, whichever devices and processes hold the others
        elif not x.is_fully_addressable:
            return None  # sharded across processes: no process holds the whole array
    return np.ascontiguousarray(np.asarray(x)).reshape(-1).view(np.uint8)


def _sha256(x) -> str | None:
    # SHA-256: in the standard library, hardware-accelerated on current CPUs, and it releases the GIL on
    # large buffers, so the leaves are hashed in parallel threads.
    data = _host_bytes(x)
    return None if data is None else hashlib.sha256(data).hexdigest()


def _leaf_records(fields: dict) -> dict[str, dict]:
    """`{name: {"dtype", "shape", "sha256"}}` for every leaf of the saved fields (sha256 None where this
    process cannot see the whole array)."""
    leaves = _named_leaves(fields)
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        digests = dict(zip(leaves, pool.map(_sha256, leaves.values())))
    return {name: {"dtype": str(x.dtype), "shape": list(x.shape), "sha256": digests[name]}
            for name, x in leaves.items()}


def _meta_digest(meta: dict) -> str:
    # Canonical JSON (sorted keys, no spaces): the same text for the dict saved and the dict read back.
    return hashlib.sha256(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _reason(error: BaseException) -> str:
    """One line saying what a read error was: orbax wraps TensorStore's error (the innermost cause, e.g.
    'OUT_OF_RANGE: Error reading "params.Dense_0.kernel/0.0" ...') in a bare Exception whose message
    dumps the whole TensorStore spec, so the innermost cause is used, cut before any dump and before
    orbax's advice to pass `partial_restore=True` (an option `Checkpoints.restore` does not take)."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).split("See full TensorStore details")[0].split("If this mismatch is intentional")[0]
    line = " ".join(text.split()) or type(root).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _fit_difference(saved: dict[str, dict], given: dict[str, dict]) -> str | None:
    """How the leaves recorded at save time differ from the template's, or None if they fit."""
    only_saved, only_given = sorted(set(saved) - set(given)), sorted(set(given) - set(saved))
    if only_saved or only_given:
        def some(names: list[str]) -> str:
            return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") if names else "none"

        return f"arrays only in the checkpoint: {some(only_saved)}; only in the given state: {some(only_given)}"
    for name, record in saved.items():
        if (record["dtype"], list(record["shape"])) != (given[name]["dtype"], given[name]["shape"]):
            return (f"{name} was saved as {record['dtype']}{list(record['shape'])}, the given state has "
                    f"{given[name]['dtype']}{given[name]['shape']}")
    return None


class Checkpoints:
    """The checkpoints of one run: an `orbax.checkpoint.CheckpointManager` over `directory`.

    Args:
      directory: the run's checkpoint directory (created if missing). Epoch `e` is saved in `directory/e`.
      keep: number of most recent epochs kept (>= 1); the best epoch is kept in addition.
      asynchronous: write files in a background thread (True) or before `save` returns.
      read_only: only read (`restore`, `epochs`, ...): the directory is not created, `save` raises, and
        the temporary directories of unfinished saves are left alone, so a run can be loaded while
        another process is still writing it.

    Raises:
      TypeError: `directory` not a str or path; `keep` not an int; `asynchronous`/`read_only` not a bool.
      ValueError: `keep < 1`; `directory` exists and is not a directory.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, asynchronous: bool = True,
                 read_only: bool = False):
        fn = "Checkpoints"
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{fn}: directory must be a str or os.PathLike, got {type(directory).__name__} "
                            f"{directory!r}.")
        keep = check_int(fn, "keep", keep, minimum=1)
        asynchronous = check_bool(fn, "asynchronous", asynchronous)
        read_only = check_bool(fn, "read_only", read_only)
        path = os.path.abspath(os.fspath(directory))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{fn}: directory {path!r} exists and is not a directory.")
        self.directory, self.keep, self.read_only = path, keep, read_only
        self._warned_unverified = False
        policy = AnyPreservationPolicy([
            LatestN(n=keep),
            BestN(get_metric_fn=_best_rank, reverse=False, n=1, keep_checkpoints_without_metrics=False)])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=_best_rank, best_mode="max", create=not read_only,
            # A writer removes the temporary directories of saves that crashed; a reader must not (they may
            # belong to a save still running in another process).
            cleanup_tmp_directories=not read_only, read_only=read_only,
            enable_async_checkpointing=asynchronous)
        self._manager = ocp.CheckpointManager(path, options=options, item_names=_ITEMS)

    def __repr__(self) -> str:
        return f"Checkpoints({self.directory!r}, keep={self.keep}, epochs={self.epochs()})"

    def epochs(self) -> list[int]:
        """The completed epochs saved (finished saves only), ascending."""
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        """The most recent saved epoch, or None if there is none (it is not read: see `restore_latest_intact`)."""
        return self._manager.latest_step()

    def best(self) -> int | None:
        """The saved epoch with the highest `best_rank` (the latest of equals), or None."""
        return self._manager.best_step()

    def path(self, epoch: int) -> str:
        """The directory of epoch `epoch`'s checkpoint."""
        return os.path.join(self.directory, str(int(epoch)))

    def save(self, epoch: int, state: TrainState, *, meta: dict[str, Any], best_rank: int) -> None:
        """Save `state` and `meta` as epoch `epoch` (atomically, with checksums; see the module docstring).

        Args:
          epoch: the number of completed epochs (>= 1), the checkpoint's name.
          state: a `TrainState` with one copy of every array (`CompiledSteps.get_state`); it is
            snapshotted, so the caller may donate its buffers right after `save` returns.
          meta: JSON-serialisable dict stored alongside (e.g. `{"epoch": ..., "history": ...}`); its
            "epoch" is set to `epoch` if absent. It is stored as JSON, so it reads back as JSON gives it
            (tuples as lists, keys as strings).
          best_rank: this epoch's rank for the "best" checkpoint: orbax keeps the epoch with the
            highest rank (the latest of equal ranks) in addition to the `keep` most recent ones.
        Raises:
          TypeError: `epoch` or `best_rank` not an int; `state` not a TrainState; `meta` not a dict or
            not JSON-serialisable.
          ValueError: `epoch < 1` or already saved; `meta["epoch"]` differs from `epoch`; `meta` uses the
            reserved key CHECKSUM_KEY; the checkpoints were opened with `read_only=True`.
        """
        if self.read_only:
            raise ValueError(f"Checkpoints.save: {self.directory!r} was opened with read_only=True; open it "
                             f"with Checkpoints(directory) to write.")
        fn = "Checkpoints.save"
        epoch = check_int(fn, "epoch", epoch, minimum=1)
        best_rank = check_int(fn, "best_rank", best_rank)
        if not isinstance(state, TrainState):
            raise TypeError(f"{fn}: state must be a TrainState, got {type(state).__name__}.")
        if not isinstance(meta, dict):
            raise TypeError(f"{fn}: meta must be a dict (stored as JSON), got {type(meta).__name__}.")
        if CHECKSUM_KEY in meta:
            raise ValueError(f"{fn}: meta may not use the key {CHECKSUM_KEY!r}, reserved for the checksums.")
        if meta.get("epoch", epoch) != epoch:
            raise ValueError(f"{fn}: meta['epoch'] is {meta['epoch']!r} but the checkpoint is epoch {epoch}; "
                             f"leave 'epoch' out of meta or give the same number.")
        if epoch in self._manager.all_steps():
            raise ValueError(f"{fn}: epoch {epoch} is already saved in {self.directory!r}; resume from it "
                             f"or use a new directory.")
        try:
            stored = json.loads(json.dumps({**meta, "epoch": epoch}))  # what reading it back will give
        except (TypeError, ValueError) as error:
            raise TypeError(f"{fn}: meta must be JSON-serialisable: {error}.") from error
        arrays = snapshot(_saved_fields(state))
        checksums = {"format": _FORMAT, "meta": _meta_digest(stored), "arrays": _leaf_records(arrays)}
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave({**stored, CHECKSUM_KEY: checksums})),
            metrics={"best_rank": best_rank}, force=True)

    def _saved_epoch(self, fn: str, epoch: int | None) -> int:
        """`epoch` (None: the latest) if it is saved, else FileNotFoundError."""
        if epoch is not None:
            epoch = check_int(fn, "epoch", epoch, minimum=1)
        saved = self.epochs()
        if epoch is None:
            epoch = self.latest()
        if epoch is None or epoch not in saved:
            raise FileNotFoundError(f"{fn}: no checkpoint of epoch {epoch} in {self.directory!r}; saved epochs: "
                                    f"{saved}.")
        return epoch

    def _error(self, fn: str, epoch: int, what: str) -> CheckpointError:
        return CheckpointError(f"{fn}: the checkpoint of epoch {epoch}, {self.path(epoch)!r}, {what}.",
                               epoch=epoch, path=self.path(epoch))

    def _read_meta(self, fn: str, epoch: int) -> tuple[dict, dict | None]:
        """(the caller's meta, the checksum record or None for an old checkpoint), verified."""
        path = self.path(epoch)
        missing = [item for item in _ITEMS if not os.path.isdir(os.path.join(path, item))]
        if missing:
            empty = "is empty" if not os.listdir(path) else f"has no {' and no '.join(m + '/' for m in missing)}"
            raise self._error(fn, epoch, f"{empty} (an incomplete or damaged checkpoint)")
        file = os.path.join(path, "meta", "metadata")
        try:
            raw = self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as error:  # FileNotFoundError, JSONDecodeError, UnicodeDecodeError, orbax's own
            raise self._error(fn, epoch, f"has an unreadable meta file {file!r}: {_reason(error)}") from error
        if not isinstance(raw, dict):
            raise self._error(fn, epoch, f"has a meta file {file!r} that holds a {type(raw).__name__}, not a dict")
        meta = {k: v for k, v in raw.items() if k != CHECKSUM_KEY}
        record = raw.get(CHECKSUM_KEY)
        if record is not None:
            if not (isinstance(record, dict) and isinstance(record.get("arrays"), dict) and "meta" in record):
                raise self._error(fn, epoch, f"has a damaged checksum record in {file!r}")
            if record["meta"] != _meta_digest(meta):
                raise self._error(fn, epoch, f"has a meta file {file!r} that does not match its checksum (corrupted)")
        if "epoch" not in meta:
            raise self._error(fn, epoch, f"has a meta file {file!r} without the 'epoch' it must record")
        if meta["epoch"] != epoch:
            raise self._error(fn, epoch, f"has a meta file {file!r} that records epoch {meta['epoch']!r}")
        return meta, record

    def _warn_unverified(self) -> None:
        if not self._warned_unverified:
            self._warned_unverified = True
            warnings.warn(f"Checkpoints: {self.directory!r} holds checkpoints saved without checksums (by an older "
                          f"jaxnets); they are read without verification. Checkpoints saved from now on are "
                          f"verified.", UserWarning, stacklevel=3)

    def meta(self, epoch: int | None = None) -> dict:
        """The `meta` dict saved with epoch `epoch` (default: the latest), verified, without reading the arrays.

        Raises:
          FileNotFoundError: no checkpoint (or not this epoch) in the directory.
          CheckpointError: the epoch's meta is missing, unreadable, does not match its checksum, or has no
            "epoch" (the arrays are not read, so their corruption shows only in `restore`).
        """
        fn = "Checkpoints.meta"
        meta, record = self._read_meta(fn, self._saved_epoch(fn, epoch))
        if record is None:
            self._warn_unverified()
        return meta

    def restore(self, like: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """Read epoch `epoch` (default: the latest) into a state shaped like `like`, and verify it.

        Args:
          like: a `TrainState` of the same model, optimizer and precision (e.g. a fresh `TrainState.create`);
            its arrays give the tree structure, shapes, dtypes and shardings, its `apply_fn`/`tx` are kept.
          epoch: the saved epoch to read, or None for the latest.
        Returns: `(state, meta)`, bit-identical to what was saved (verified against the saved checksums;
          a checkpoint saved without them is read unverified, with a warning once per `Checkpoints`).
        Raises:
          TypeError: `like` not a TrainState; `epoch` not an int.
          FileNotFoundError: no checkpoint (or not this epoch) in the directory.
          CheckpointError: the checkpoint is damaged (a file corrupted, truncated or missing, the meta
            unreadable or without "epoch"): `.epoch` and `.path` say which; the message says what.
          ValueError: the checkpoint does not fit `like` (another model, optimizer or precision).
        """
        fn = "Checkpoints.restore"
        if not isinstance(like, TrainState):
            raise TypeError(f"{fn}: like must be a TrainState (e.g. a fresh TrainState.create), got "
                            f"{type(like).__name__}.")
        epoch = self._saved_epoch(fn, epoch)
        meta, record = self._read_meta(fn, epoch)
        return self._restore_arrays(fn, like, epoch, record), meta

    def _restore_arrays(self, fn: str, like: TrainState, epoch: int, record: dict | None) -> TrainState:
        path = self.path(epoch)
        arrays = _saved_fields(like)
        if record is not None:
            given = {name: {"dtype": str(x.dtype), "shape": list(x.shape)} for name, x in _named_leaves(arrays).items()}
            difference = _fit_difference(record["arrays"], given)
            if difference is not None:
                raise ValueError(f"{fn}: the checkpoint {path!r} does not fit the given state (another model, "
                                 f"optimizer or precision): {difference}; {_MISMATCH_ADVICE}.")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
        try:
            values = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract))).state
        except Exception as error:
            if record is None and isinstance(error, (ValueError, KeyError, TypeError)):
                # An unverified checkpoint: orbax's tree and shape errors mean another model or optimizer.
                raise ValueError(f"{fn}: the checkpoint {path!r} does not fit the given state (another model, "
                                 f"optimizer or precision?): {_reason(error)}; {_MISMATCH_ADVICE}.") from error
            raise self._error(fn, epoch, f"has unreadable arrays under state/: {_reason(error)}") from error
        if jax.tree.structure(values) != jax.tree.structure(arrays):
            raise ValueError(f"{fn}: the checkpoint {path!r} has the tree structure {jax.tree.structure(values)}, "
                             f"the given state {jax.tree.structure(arrays)} (another model, optimizer or "
                             f"precision); {_MISMATCH_ADVICE}.")
        if record is None:
            self._warn_unverified()
        else:
            restored = _leaf_records(values)
            bad = [name for name, saved in record["arrays"].items()
                   if None not in (saved["sha256"], restored[name]["sha256"])  # None: not visible to one process
                   and saved["sha256"] != restored[name]["sha256"]]
            if bad:
                names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise self._error(fn, epoch, f"is corrupted: the array{'s' if len(bad) > 1 else ''} {names} "
                                             f"read from state/ do{'es' if len(bad) == 1 else ''} not match the "
                                             f"checksum recorded when saved")
        return like.replace(**values)

    def restore_latest_intact(self, like: TrainState, *, check_meta: Callable[[dict], None] | None = None
                              ) -> tuple[TrainState, dict, list[CheckpointError]]:
        """Restore the newest epoch that passes verification, skipping (and setting aside) damaged newer ones.

        Tries the epochs from the newest down. An epoch that raises `CheckpointError` is skipped with a
        warning naming it and what is wrong; once an older epoch restores, the skipped ones are renamed
        `<epoch>.corrupt` (`.corrupt-2`, ... if taken) by process 0, so the resumed run can save those
        epochs again while the damaged files stay for inspection. Nothing is renamed if none is intact.

        Args:
          like: as in `restore`.
          check_meta: called with each candidate's verified meta before its arrays are read (e.g. to
            check that the run's settings match); what it raises propagates (it does not skip an epoch).
        Returns: `(state, meta, skipped)`: the restored state and its meta as `restore` gives them, and the
          `CheckpointError` of every newer epoch skipped (newest first; empty when the latest was intact).
        Raises:
          FileNotFoundError: no checkpoint in the directory.
          CheckpointError: no epoch is intact (the newest epoch's error; the others were warned about).
          ValueError: the checkpoints do not fit `like` (another model, optimizer or precision).
        """
        fn = "Checkpoints.restore_latest_intact"
        if not isinstance(like, TrainState):
            raise TypeError(f"{fn}: like must be a TrainState (e.g. a fresh TrainState.create), got "
                            f"{type(like).__name__}.")
        epochs = self.epochs()
        if not epochs:
            raise FileNotFoundError(f"{fn}: no checkpoint in {self.directory!r}.")
        skipped: list[CheckpointError] = []
        for epoch in reversed(epochs):
            try:
                meta, record = self._read_meta(fn, epoch)
                if check_meta is not None:
                    check_meta(meta)
                if record is None:
                    self._warn_unverified()
                state = self._restore_arrays(fn, like, epoch, record)
            except CheckpointError as error:
                skipped.append(error)
                older = [e for e in epochs if e < epoch]
                warnings.warn(f"{error} Skipping epoch {epoch}" + (f"; trying epoch {older[-1]}." if older else "."),
                              UserWarning, stacklevel=2)
                continue
            if skipped:
                moved = self._set_aside([error.epoch for error in skipped])
                warnings.warn(f"{fn}: restored epoch {epoch} of {self.directory!r}; the damaged newer epochs were set "
                              f"aside as {moved}.", UserWarning, stacklevel=2)
            return state, meta, skipped
        raise skipped[0]

    def _set_aside(self, epochs: list[int]) -> list[str]:
        """Rename the damaged `epochs` to `<epoch>.corrupt` (process 0) and forget them (every process);
        returns the new names."""
        moved = []
        for epoch in epochs:
            target, n = f"{self.path(epoch)}.corrupt", 1
            while os.path.exists(target):
                n += 1
                target = f"{self.path(epoch)}.corrupt-{n}"
            if jax.process_index() == 0:
                os.rename(self.path(epoch), target)
            moved.append(os.path.basename(target))
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("jaxnets_checkpoints_set_aside")
        self._manager.reload()
        return moved

    def wait(self) -> None:
        """Block until every save has been written and committed (renamed to its final directory)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for the saves and release the manager's resources."""
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
