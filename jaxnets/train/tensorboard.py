"""TensorBoard event files of a training run, written by `fit` through tensorboardX (no TensorFlow needed).

    pip install 'jaxnets[tensorboard]'          # tensorboardX (the writer) and tensorboard (the viewer)
    state, history = train.fit(..., log_dir="runs/lenet5")
    tensorboard --logdir runs                   # then open http://localhost:6006

Every scalar is written against the same x axis, the optimizer step (the number of updates done), so
the curves overlay and a resumed run continues its own lines:

- per logging step (`fit`'s refreshes, about twice a second, and each epoch's end), from the metrics
  the loop fetches anyway (no extra host round trip): `train/loss` and `train/error`, the mean over the
  steps fetched since the previous point (`sum of per-example losses / count`, `1 - correct / count`),
  and the global L2 norms of the LAST of those steps, `norm/grad`, `norm/param`, `norm/update` (the
  values at that step, as `make_train_step` returns them; not averaged);
- per epoch, at the step where the epoch ended: `epoch/epoch` (1-based), `epoch/train_loss`,
  `epoch/train_error`, `epoch/val_loss`, `epoch/val_error` (with validation data),
  `epoch/learning_rate` (when known), `epoch/images_per_sec` (the `History` values of that epoch).

A resumed run opens its writer with `purge_step` = the step it resumes from: TensorBoard then hides
what an interrupted run had logged after its last checkpoint, so every curve has one value per step.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence

from jaxnets.checks import check_int
from jaxnets.train.history import History

__all__ = ["TensorBoardLog", "tensorboard_available", "check_tensorboard", "STEP_TAGS", "NORM_TAGS", "EPOCH_TAGS"]

STEP_TAGS = ("train/loss", "train/error")
NORM_TAGS = {"grad_norm": "norm/grad", "param_norm": "norm/param", "update_norm": "norm/update"}
EPOCH_TAGS = {"train_loss": "epoch/train_loss", "train_error": "epoch/train_error", "val_loss": "epoch/val_loss",
              "val_error": "epoch/val_error", "learning_rate": "epoch/learning_rate",
              "images_per_sec": "epoch/images_per_sec"}
_INSTALL = "pip install tensorboardX (or pip install 'jaxnets[tensorboard]')"


def tensorboard_available() -> bool:
    """Whether tensorboardX, the event-file writer, can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoardLog:
    """The event files of one run in `log_dir` (a `tensorboardX.SummaryWriter`); see the module docstring.

    Args:
      log_dir: the directory of the event files (created if needed); `tensorboard --logdir` on it or a
        parent shows the run.
      purge_step: the step a resumed run continues from (0 for a fresh run): events an earlier writer
        logged AFTER this step are hidden by TensorBoard (those at it are the checkpointed epoch's end).
    Raises: ImportError naming the install command when tensorboardX is not installed; TypeError /
      ValueError for a bad `purge_step`.

    Use as a context manager, or call `close()`; `fit` does both for you.
    """

    def __init__(self, log_dir: str | os.PathLike, *, purge_step: int = 0):
        check_int("TensorBoardLog", "purge_step", purge_step, minimum=0)
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise ImportError(f"TensorBoardLog: writing TensorBoard event files needs tensorboardX, which is not "
                              f"installed; {_INSTALL}.") from error
        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        # TensorBoard drops the earlier events at steps >= the writer's purge_step (a SessionLog START there).
        # tensorboardX names the file by the whole second: a second writer within that second (a quick resume)
        # would overwrite the first file. The nanosecond suffix keeps both, in the order TensorBoard reads them.
        self._writer = SummaryWriter(self.log_dir, purge_step=int(purge_step) + 1 if purge_step else None,
                                     filename_suffix=f".{time.time_ns():020d}")

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def steps(self, metrics: Sequence[Mapping], last_step: int) -> None:
        """Log one point from the per-step metrics fetched since the previous point.

        Args:
          metrics: host dicts of the steps, in order, each `{"loss", "correct", "count"}` sums (and the
            norms `make_train_step` adds, if present); steps with a non-finite loss are left out of the
            mean, steps with no valid row count for nothing. Empty: nothing is written.
          last_step: the optimizer step after the last of them (the number of updates done).
        """
        finite = [m for m in metrics if math.isfinite(float(m["loss"]))]
        count = sum(int(m["count"]) for m in finite)
        if count:
            self._writer.add_scalar("train/loss", math.fsum(float(m["loss"]) for m in finite) / count, last_step)
            self._writer.add_scalar("train/error", 1.0 - sum(int(m["correct"]) for m in finite) / count, last_step)
        if metrics:
            for key, tag in NORM_TAGS.items():
                if key in metrics[-1]:
                    self._writer.add_scalar(tag, float(metrics[-1][key]), last_step)

    def epoch(self, history: History, step: int) -> None:
        """Log the last epoch of `history` at optimizer step `step` (where it ended), then flush to disk."""
        epoch = len(history)
        if not epoch:
            return
        self._writer.add_scalar("epoch/epoch", epoch, step)
        for key, tag in EPOCH_TAGS.items():
            values = getattr(history, key)
            if len(values) == epoch:  # val_*: only with validation data; learning_rate: only when known
                self._writer.add_scalar(tag, float(values[-1]), step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def check_tensorboard(fn: str, tensorboard, log_dir: str | None) -> bool:
    """Whether `fit(..., tensorboard=, log_dir=)` writes event files (`fn`: for messages); checked before
    anything is compiled.

    Args:
      tensorboard: None (write when `log_dir` is set and tensorboardX is installed; without it the run
        goes on without event files), True (write; an error without tensorboardX or without `log_dir`)
        or False (never).
      log_dir: the run's log directory, or None.
    Returns: True to write (on the main process; `fit` opens a `TensorBoardLog` there).
    Raises: TypeError for a `tensorboard` that is not None or a bool; ValueError for True without
      `log_dir`; ImportError for True without tensorboardX.
    """
    if tensorboard is not None and not isinstance(tensorboard, bool):
        raise TypeError(f"{fn}: tensorboard must be None (write where tensorboardX is installed), True or False, "
                        f"got {type(tensorboard).__name__} {tensorboard!r}.")
    if tensorboard and log_dir is None:
        raise ValueError(f"{fn}: tensorboard=True needs a directory for the event files; pass log_dir= (or "
                         f"checkpoint_dir=, the default log_dir), got neither.")
    if tensorboard and not tensorboard_available():
        raise ImportError(f"{fn}: tensorboard=True needs tensorboardX, which is not installed; {_INSTALL}; or "
                          f"pass tensorboard=None to write event files only where it is installed.")
    return tensorboard is not False and log_dir is not None and tensorboard_available()
