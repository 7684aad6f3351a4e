"""Run records: `History` (per-epoch metrics), `EarlyStopping`, the best-metric tracker, plots and log files.

The log files of a run (`history.json`, `curves.png`) are written with one atomic writer,
`write_atomic`: a reader sees the old file or the new one, never half of one, and an interrupted write
leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.checks import check_choice, check_positive_int, check_real

__all__ = ["History", "EarlyStopping", "NonFiniteLossError", "BestMetric", "MONITORS", "plot_history",
           "write_atomic", "write_text_atomic", "write_logs", "json_float", "learning_rate_of",
           "remove_stale_temporaries"]

MONITORS = ("val_loss", "val_error", "train_loss", "train_error")


# ----------------------------------------------------------------------------------------------
# History, EarlyStopping, NonFiniteLossError, BestMetric
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class History:
    """Per-epoch record of a run; entry `i` of every list belongs to epoch `i + 1`.

    Fields (each list has one entry per completed epoch, or is empty when not measured):
      train_loss: mean training loss over the epoch's batches, as they ran (the parameters change
        during the epoch; PyTorch's usual running average).
      train_error: 1 - accuracy over the same batches.
      val_loss, val_error: on the validation data at the end of the epoch, in evaluation mode
        (running BatchNorm statistics, no dropout); empty without validation data.
      learning_rate: the rate of the epoch's last update (`fit`'s `learning_rate=` schedule at that
        step, or the `learning_rate` hyperparameter of an `optax.inject_hyperparams` optimizer); empty
        when neither is available.
      images_per_sec: training examples per second over the epoch (the first epoch includes compilation).
      wall_time: seconds of training and validation since the run started, cumulative (monotone; a
        resumed run continues from the checkpoint's value).
      best_epoch: 1-based epoch with the best monitored metric (see `fit`), or None.
      stopped_early: True if early stopping ended the run.

    JSON: `to_json()` / `History.from_json(text)`; a non-finite value is written as `null` (strict JSON)
    and read back as `nan`.
    """

    train_loss: list[float] = dataclasses.field(default_factory=list)
    train_error: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    val_error: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    images_per_sec: list[float] = dataclasses.field(default_factory=list)
    wall_time: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    # A population (`fit(seeds=..., hparams=...)`): the members `{"seed": s, **hp}` and, per member, None or
    # `{"step", "epoch"}` of its divergence; both None for a single run. (Minimal: the reporting branch owns these.)
    runs: list | None = None
    diverged: list | None = None

    _LISTS = ("train_loss", "train_error", "val_loss", "val_error", "learning_rate", "images_per_sec",
              "wall_time")

    def __len__(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats as None)."""
        def value(v):
            return [json_float(x) for x in v] if isinstance(v, (list, tuple)) else json_float(v)

        out: dict[str, Any] = {name: [value(v) for v in getattr(self, name)] for name in self._LISTS}
        out["best_epoch"], out["stopped_early"] = self.best_epoch, self.stopped_early
        if self.runs is not None:
            out["runs"], out["diverged"] = self.runs, self.diverged
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of `to_dict` (None read as nan). Raises ValueError for unknown or missing fields."""
        fields = set(cls._LISTS) | {"best_epoch", "stopped_early"}
        if not isinstance(data, Mapping) or not fields <= set(data) <= fields | {"runs", "diverged"}:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"History.from_dict: expected the fields {sorted(fields)}, got {got}.")

        def value(v):
            return [value(x) for x in v] if isinstance(v, list) else (math.nan if v is None else float(v))

        lists = {name: [value(v) for v in data[name]] for name in cls._LISTS}
        best, stopped = data["best_epoch"], data["stopped_early"]
        if data.get("runs") is not None:  # a population: one best epoch and one flag per member
            return cls(**lists, best_epoch=[None if b is None else int(b) for b in best],
                       stopped_early=[bool(x) for x in stopped], runs=[dict(r) for r in data["runs"]],
                       diverged=list(data["diverged"]))
        return cls(**lists, best_epoch=None if best is None else int(best), stopped_early=bool(stopped))

    def to_json(self) -> str:
        """The history as strict JSON text (`json.loads` gives `to_dict()`)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> History:
        """Read `to_json()` text (e.g. the contents of a run's history.json)."""
        return cls.from_dict(json.loads(text))


def json_float(value) -> float | None:
    """`value` as a float, or None when it is not finite (strict JSON has no nan or inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when `monitor` has not improved for `patience` epochs; `fit` then returns the best epoch's state.

    An epoch improves when `value < best - min_delta` (every monitored quantity is lower-is-better; a
    non-finite value never improves). Training stops after `patience` consecutive epochs without
    improvement. PyTorch: no built-in (Keras' `EarlyStopping(restore_best_weights=True)`).

    Attributes:
      monitor: "val_loss" (default), "val_error", "train_loss" or "train_error".
      patience: epochs without improvement before stopping, an int >= 1.
      min_delta: minimum decrease that counts as an improvement, >= 0.
    Raises: ValueError/TypeError for an unknown monitor, `patience < 1`, a negative `min_delta`.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self):
        fn = "EarlyStopping"
        check_choice(fn, "monitor", self.monitor, MONITORS)
        check_positive_int(fn, "patience", self.patience)
        check_real(fn, "min_delta", self.min_delta, minimum=0.0)


class NonFiniteLossError(RuntimeError):
    """Training stopped because a step's loss (or the parameters after an epoch) was not finite.

    Attributes:
      step: the `TrainState.step` value of the offending step (0-based: the number of updates before it).
      epoch: its 1-based epoch; `batch`: its 1-based batch within the epoch.
      checkpoint: directory of the last good checkpoint (untouched by the failure), or None.
      history: the `History` of the completed epochs before the failure (set by `fit`; None when
        raised elsewhere), so that a loop over settings can record the failed run.
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int, checkpoint: str | None,
                 history: History | None = None):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.checkpoint = step, epoch, batch, checkpoint
        self.history = history


class BestMetric:
    """Tracks the monitored metric: the best value, its epoch, a rank raised on every improvement, and
    the epochs since the last improvement (early stopping's counter).

    `update(value, epoch) -> improved`: an epoch improves when `value` is finite and
    `value < best - min_delta` (the first finite value always does). `to_dict()`/`load(dict)` save and
    restore the tracker with a checkpoint.
    """

    def __init__(self, min_delta: float):
        self.min_delta = min_delta
        self.value: float | None = None
        self.epoch: int | None = None
        self.rank = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        improved = math.isfinite(value) and (self.value is None or value < self.value - self.min_delta)
        if improved:
            self.value, self.epoch, self.rank, self.bad_epochs = value, epoch, self.rank + 1, 0
        else:
            self.bad_epochs += 1
        return improved

    def to_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "rank": self.rank, "bad_epochs": self.bad_epochs}

    def load(self, data: Mapping) -> None:
        self.value, self.epoch = data["value"], data["epoch"]
        self.rank, self.bad_epochs = int(data["rank"]), int(data["bad_epochs"])


def learning_rate_of(learning_rate, opt_state, step: int) -> float | None:
    """The learning rate of update `step` (0-based), for `History.learning_rate`, or None when it cannot be known.

    Args:
      learning_rate: a float or an optax schedule (`fit`'s `learning_rate=`), or None: then the
        `learning_rate` hyperparameter of an `optax.inject_hyperparams` state in `opt_state`, if exactly one.
      opt_state: the optimizer state after the update.
      step: the 0-based update.
    """
    if learning_rate is not None:
        return float(learning_rate(step)) if callable(learning_rate) else float(learning_rate)
    found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
             if len(path) >= 2 and getattr(path[-2], "name", None) == "hyperparams"
             and getattr(path[-1], "key", None) == "learning_rate"]
    return float(np.asarray(jax.device_get(found[0])).reshape(-1)[0]) if len(found) == 1 else None


# ----------------------------------------------------------------------------------------------
# the atomic writer
# ----------------------------------------------------------------------------------------------
_TMP = ".tmp-"  # temporary files are named `<target>.tmp-<pid><ext>`


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot be checked): leave its file alone
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files `<path>.tmp-<pid>*` that a killed process left for the target `path`.

    A file counts as stale when the process `<pid>` no longer runs, or is this process (whose own
    earlier write is over). Returns the removed paths.
    """
    path = os.fspath(path)
    removed = []
    for tmp in glob.glob(glob.escape(path) + _TMP + "*"):
        digits = tmp[len(path) + len(_TMP):]
        pid = digits[:len(digits) - len(digits.lstrip("0123456789"))]
        if not pid or (int(pid) != os.getpid() and _pid_alive(int(pid))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Write the file `path` atomically: `write(tmp)` fills a temporary file next to it, then it is renamed.

    A reader sees the old file or the new one, never half of one. The temporary file is
    `<path>.tmp-<pid><ext>` (the extension of `path` kept, for writers that pick the format from it);
    it is removed when `write` raises (or the rename fails), and stale ones of the same target left by a
    killed process are removed first (`remove_stale_temporaries`).

    Args:
      path: the target file; its directory must exist.
      write: `write(tmp_path)`, writes the whole contents to `tmp_path`.
    Raises: whatever `write` or the rename raises, after removing the temporary file.
    """
    path = os.fspath(path)
    remove_stale_temporaries(path)
    tmp = f"{path}{_TMP}{os.getpid()}{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (`write_atomic`)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


# ----------------------------------------------------------------------------------------------
# plots and log files
# ----------------------------------------------------------------------------------------------
def plot_history(history: History, path: str | os.PathLike) -> None:
    """Save `curves.png`-style plots of a `History`: loss and error (%) per epoch, train and validation.

    Uses matplotlib's object API (`matplotlib.figure.Figure`, Agg canvas), so it never opens a window or
    touches pyplot's global state. The file is written atomically (`write_atomic`).
    """
    from matplotlib.figure import Figure

    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    for ax, name, scale, label in ((ax_loss, "loss", 1.0, "loss"), (ax_err, "error", 100.0, "error (%)")):
        ax.plot(epochs, scale * np.asarray(getattr(history, f"train_{name}"), float), "o-", label="train")
        if len(getattr(history, f"val_{name}")):
            ax.plot(epochs, scale * np.asarray(getattr(history, f"val_{name}"), float), "s-", label="validation")
        if isinstance(history.best_epoch, int):
            ax.axvline(history.best_epoch, color="gray", linestyle=":", label=f"best (epoch {history.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_err.set_title("error")
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))


def write_logs(log_dir: str | None, history: History) -> None:
    """Write `history.json` and `curves.png` into `log_dir` (created if needed); nothing when `log_dir` is None
    or the history is empty."""
    if log_dir is None or not len(history):
        return
    os.makedirs(log_dir, exist_ok=True)
    write_text_atomic(os.path.join(log_dir, "history.json"), history.to_json() + "\n")
    plot_history(history, os.path.join(log_dir, "curves.png"))
