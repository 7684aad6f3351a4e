"""Checkpoints of a training run with orbax-checkpoint: atomic, the last N epochs plus the best one.

A run directory holds one sub-directory per saved epoch (`<directory>/<epoch>/`), each with two items:

    state/   the TrainState's arrays: step, params, batch_stats, opt_state, rng, and loss_scale when the
             state has one (float16 training; a state without one is saved exactly as before)
    meta/    JSON: the completed epoch, the History so far, and whatever else the caller stores

Atomicity is orbax's: an epoch is written to a temporary directory
`<epoch>.orbax-checkpoint-tmp-<timestamp>` and renamed to `<epoch>` only when every file is written
(and `commit_success.txt` inside it), so a crash during a save leaves the previous epochs untouched and
only an unfinished temporary directory behind, which `latest()`/`restore()` ignore and the next
`Checkpoints` on the directory deletes. Saves are asynchronous by default: `save` returns once the
arrays are snapshotted (a device copy, so the training step may donate the state's buffers right
away) and the files are written in a background thread; `wait()` blocks until they are on disk.

Preservation: after each save, orbax keeps the `keep` most recent epochs and the best one, where
"best" is the epoch saved with the highest `best_rank` (the caller raises the rank each time its
monitored metric improves; see `jaxnets.train.fit`), so ties and `min_delta` follow the caller's rule.

Multi-process runs: every process must construct the `Checkpoints` and call `save`/`restore` (orbax
synchronises them and writes each array once: the primary process, process 0, writes the metadata
and the replicated arrays). Logs other than checkpoints are written by process 0 only (`fit`).

PyTorch: `torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), ...}, path)`, with
the atomic write and the retention policy done by hand.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from jaxnets.train.state import TrainState

__all__ = ["Checkpoints", "STATE_FIELDS"]

# The TrainState fields that are saved (apply_fn and tx are code: the caller supplies them again);
# loss_scale only when it is not None.
STATE_FIELDS = ("step", "params", "batch_stats", "opt_state", "rng", "loss_scale")


def _saved_fields(state: TrainState) -> dict:
    return {name: getattr(state, name) for name in STATE_FIELDS if getattr(state, name) is not None}


def _best_rank(metrics: dict) -> float:
    return float(metrics["best_rank"])


def snapshot(tree):
    """A device copy of every array of `tree` (same shardings), safe to keep while the original is donated."""
    return jax.tree.map(lambda x: jax.device_put(x, x.sharding, may_alias=False), tree)


class Checkpoints:
    """The checkpoints of one run: an `orbax.checkpoint.CheckpointManager` over `directory`.

    Args:
      directory: the run's checkpoint directory (created if missing). Epoch `e` is saved in `directory/e`.
      keep: number of most recent epochs kept (>= 1); the best epoch is kept in addition.
      asynchronous: write files in a background thread (True) or before `save` returns.

    Raises:
      ValueError: `keep < 1`; `directory` exists and is not a directory.
      TypeError: `keep` not an int.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, asynchronous: bool = True):
        fn = "Checkpoints"
        if isinstance(keep, bool) or not isinstance(keep, int):
            raise TypeError(f"{fn}: keep must be an int >= 1 (the number of recent epochs kept), got {keep!r}.")
        if keep < 1:
            raise ValueError(f"{fn}: keep must be >= 1 (the number of recent epochs kept), got {keep}.")
        path = os.path.abspath(os.fspath(directory))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{fn}: directory {path!r} exists and is not a directory.")
        self.directory, self.keep = path, keep
        policy = AnyPreservationPolicy([
            LatestN(n=keep),
            BestN(get_metric_fn=_best_rank, reverse=False, n=1, keep_checkpoints_without_metrics=False)])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, best_fn=_best_rank, best_mode="max", create=True,
            cleanup_tmp_directories=True,  # remove the temporary directories of saves that crashed
            enable_async_checkpointing=asynchronous)
        self._manager = ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))

    def __repr__(self) -> str:
        return f"Checkpoints({self.directory!r}, keep={self.keep}, epochs={self.epochs()})"

    def epochs(self) -> list[int]:
        """The completed epochs saved (finished saves only), ascending."""
        return sorted(self._manager.all_steps())

    def latest(self) -> int | None:
        """The most recent saved epoch, or None if there is none."""
        return self._manager.latest_step()

    def best(self) -> int | None:
        """The saved epoch with the highest `best_rank` (the latest of equals), or None."""
        return self._manager.best_step()

    def path(self, epoch: int) -> str:
        """The directory of epoch `epoch`'s checkpoint."""
        return os.path.join(self.directory, str(int(epoch)))

    def save(self, epoch: int, state: TrainState, *, meta: dict[str, Any], best_rank: int) -> None:
        """Save `state` and `meta` as epoch `epoch` (atomically; see the module docstring).

        Args:
          epoch: the number of completed epochs (>= 1), the checkpoint's name.
          state: a `TrainState` with one copy of every array (`CompiledSteps.get_state`); it is
            snapshotted, so the caller may donate its buffers right after `save` returns.
          meta: JSON-serialisable dict stored alongside (e.g. `{"epoch": ..., "history": ...}`).
          best_rank: this epoch's rank for the "best" checkpoint: orbax keeps the epoch with the
            highest rank (the latest of equal ranks) in addition to the `keep` most recent ones.
        Raises: ValueError if `epoch` is not a positive int or is already saved.
        """
        fn = "Checkpoints.save"
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"{fn}: epoch must be a positive int (completed epochs), got {epoch!r}.")
        if epoch in self._manager.all_steps():
            raise ValueError(f"{fn}: epoch {epoch} is already saved in {self.directory!r}; resume from it "
                             f"or use a new directory.")
        arrays = snapshot(_saved_fields(state))
        self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(arrays),
                                                          meta=ocp.args.JsonSave(meta)),
                           metrics={"best_rank": int(best_rank)}, force=True)

    def _saved_epoch(self, fn: str, epoch: int | None) -> int:
        """`epoch` (None: the latest) if it is saved, else FileNotFoundError."""
        saved = self.epochs()
        if epoch is None:
            epoch = self.latest()
        if epoch is None or epoch not in saved:
            raise FileNotFoundError(f"{fn}: no checkpoint of epoch {epoch} in {self.directory!r}; saved epochs: "
                                    f"{saved}.")
        return epoch

    def meta(self, epoch: int | None = None) -> dict:
        """The `meta` dict saved with epoch `epoch` (default: the latest), without reading the arrays.

        Raises: FileNotFoundError: no checkpoint (or not this epoch) in the directory.
        """
        epoch = self._saved_epoch("Checkpoints.meta", epoch)
        return dict(self._manager.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore(self, like: TrainState, epoch: int | None = None) -> tuple[TrainState, dict]:
        """Read epoch `epoch` (default: the latest) into a state shaped like `like`.

        Args:
          like: a `TrainState` of the same model and optimizer (e.g. a fresh `TrainState.create`); its
            arrays give the tree structure, shapes, dtypes and shardings, its `apply_fn`/`tx` are kept.
          epoch: the saved epoch to read, or None for the latest.
        Returns: `(state, meta)`, bit-identical to what was saved.
        Raises:
          FileNotFoundError: no checkpoint (or not this epoch) in the directory.
          ValueError: the checkpoint does not fit `like` (another model or optimizer).
        """
        fn = "Checkpoints.restore"
        epoch = self._saved_epoch(fn, epoch)
        arrays = _saved_fields(like)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
        try:
            restored = self._manager.restore(epoch, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{fn}: the checkpoint {self.path(epoch)!r} does not fit the given state (was it saved "
                             f"with another model or optimizer?): {error}") from error
        values = restored.state
        if jax.tree.structure(values) != jax.tree.structure(arrays):
            raise ValueError(f"{fn}: the checkpoint {self.path(epoch)!r} has the tree structure "
                             f"{jax.tree.structure(values)}, the given state {jax.tree.structure(arrays)} (was it "
                             f"saved with another model or optimizer?).")
        return like.replace(**values), dict(restored.meta)

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
