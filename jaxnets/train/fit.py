"""`fit`: the training loop, with validation, early stopping, checkpoints, logs and a progress bar.

    from jaxnets import data, models, train
    train_set, val_set = data.split(data.mnist_sample(), 0.1, seed=0)
    tx = train.optimizer("adam", learning_rate=1e-3)
    state, history = train.fit(models.create("lenet5"), train_set, val_data=val_set, epochs=10,
                               batch_size=64, optimizer=tx, checkpoint_dir="runs/lenet5")
    print(1 - history.val_error[-1])                 # validation accuracy of the last epoch

Read top to bottom, one epoch is:

    for batch in Batches(train, batch_size, seed=seed).epoch(e):     # order fixed by (seed, e)
        state, metrics = steps.train(state, steps.put_batch(batch))    # compiled, no host round-trip
    (fetch the metric sums once; validate; early stopping; checkpoint; history.json, curves.png)

Determinism: the batch order of epoch `e` comes from `(seed, e)` and every dropout/augmentation key
from `fold_in(state.rng, state.step)`, so a run resumed from a checkpoint (which restores `step`,
`params`, `batch_stats`, `opt_state` and `rng` bit for bit) ends with exactly the parameters of an
uninterrupted run.

Host syncs: the compiled step returns metric SUMS as device scalars. The loop keeps them on the
device and fetches the finished steps' sums about twice a second (for the progress bar and to catch
a non-finite loss early; only steps older than the one just dispatched are fetched, so the device
never waits for the host), and the rest once at the end of the epoch. The epoch's training loss and
error are the sums over the batches as they ran (no second pass over the training set).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.data.augment import to_float
from jaxnets.data.batches import Batches
from jaxnets.checks import is_channels_last
from jaxnets.layers.losses import cross_entropy
from jaxnets.nn import BatchNorm
from jaxnets.train.checkpoint import Checkpoints, snapshot
from jaxnets.train.distributed import is_main_process
from jaxnets.train.parallel import CompiledSteps, compile_steps
from jaxnets.train.precision import all_finite, as_policy
from jaxnets.train.progress import ProgressBar, progress_enabled
from jaxnets.train.state import TrainState

__all__ = ["fit", "evaluate", "History", "EarlyStopping", "NonFiniteLossError", "recompute_batch_stats",
           "plot_history"]

MONITORS = ("val_loss", "val_error", "train_loss", "train_error")
_REFRESH_SECONDS = 0.5  # how often the loop fetches finished steps' metrics (progress bar, non-finite check)


# ----------------------------------------------------------------------------------------------
# History, EarlyStopping, NonFiniteLossError
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

    _LISTS = ("train_loss", "train_error", "val_loss", "val_error", "learning_rate", "images_per_sec",
              "wall_time")

    def __len__(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats as None)."""
        out: dict[str, Any] = {name: [_json_float(v) for v in getattr(self, name)] for name in self._LISTS}
        out["best_epoch"], out["stopped_early"] = self.best_epoch, self.stopped_early
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of `to_dict` (None read as nan). Raises ValueError for unknown or missing fields."""
        fields = set(cls._LISTS) | {"best_epoch", "stopped_early"}
        if not isinstance(data, Mapping) or set(data) != fields:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"History.from_dict: expected the fields {sorted(fields)}, got {got}.")
        lists = {name: [math.nan if v is None else float(v) for v in data[name]] for name in cls._LISTS}
        best = data["best_epoch"]
        return cls(**lists, best_epoch=None if best is None else int(best), stopped_early=bool(data["stopped_early"]))

    def to_json(self) -> str:
        """The history as strict JSON text (`json.loads` gives `to_dict()`)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> History:
        """Read `to_json()` text (e.g. the contents of a run's history.json)."""
        return cls.from_dict(json.loads(text))


def _json_float(value) -> float | None:
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
        if self.monitor not in MONITORS:
            raise ValueError(f"{fn}: monitor must be one of {MONITORS}, got {self.monitor!r}.")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int):
            raise TypeError(f"{fn}: patience must be an int >= 1, got {self.patience!r}.")
        if self.patience < 1:
            raise ValueError(f"{fn}: patience must be an int >= 1, got {self.patience}.")
        if (isinstance(self.min_delta, bool) or not isinstance(self.min_delta, (int, float))
                or not self.min_delta >= 0):
            raise ValueError(f"{fn}: min_delta must be a number >= 0, got {self.min_delta!r}.")


class NonFiniteLossError(RuntimeError):
    """Training stopped because a step's loss (or the parameters after an epoch) was not finite.

    Attributes:
      step: the `TrainState.step` value of the offending step (0-based: the number of updates before it).
      epoch: its 1-based epoch; `batch`: its 1-based batch within the epoch.
      checkpoint: directory of the last good checkpoint (untouched by the failure), or None.
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int, checkpoint: str | None):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.checkpoint = step, epoch, batch, checkpoint


class _Best:
    """Tracks the monitored metric: the best value, its epoch, a rank raised on every improvement, and
    the epochs since the last improvement (early stopping's counter)."""

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


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _compiled(mode: str, loss_fn: Callable, preprocess, augment, devices: tuple | None,
              precision=None, compiler_options="auto") -> CompiledSteps:
    """`compile_steps`, cached: repeated `fit` calls with the same model and optimizer objects (a resume,
    a sweep over seeds) reuse the compiled programs instead of compiling them again. A `compiler_options`
    dict arrives as a tuple of items (hashable)."""
    if isinstance(compiler_options, tuple):
        compiler_options = dict(compiler_options)
    return compile_steps(mode, loss_fn=loss_fn, preprocess=preprocess, augment=augment,
                         devices=None if devices is None else list(devices), precision=precision,
                         compiler_options=compiler_options)


def _hashable_options(options):
    """`compiler_options` in a form `_compiled`'s cache can key on (a dict becomes sorted items)."""
    return tuple(sorted(options.items())) if isinstance(options, Mapping) else options


def _as_batches(fn: str, name: str, data, batch_size: int | None, *, train: bool, seed: int) -> Batches:
    """`data` as a `Batches`: a dict becomes `Batches(data, batch_size)` (training: shuffled by `seed`,
    incomplete last batch dropped; validation: stored order, every example)."""
    if isinstance(data, Batches):
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"{fn}: batch_size={batch_size} differs from the batch_size {data.batch_size} of the "
                             f"Batches passed as {name}; pass batch_size=None (or the same value).")
        return data
    if not isinstance(data, Mapping) or "image" not in data or "label" not in data:
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise TypeError(f"{fn}: {name} must be a dict {{'image': [N, H, W, C], 'label': [N]}} or a "
                        f"jaxnets.data.Batches, got {got}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be a positive int when {name} is a dict, got {batch_size!r}.")
    n = len(data["label"])
    if train and batch_size > n:
        raise ValueError(f"{fn}: batch_size {batch_size} is larger than the {n} training examples; use a "
                         f"batch_size <= {n}.")
    return Batches(data, int(batch_size), shuffle=train, seed=seed, drop_last=train)


def _sample_input(data, batches: Batches):
    """One example `[1, H, W, C]`, for `TrainState.create` (only its shape and dtype are used)."""
    if isinstance(data, Mapping):
        return np.asarray(data["image"][:1])
    with batches.epoch(0) as it:
        image = next(it)["image"]
    if isinstance(image, jax.Array) and not image.is_fully_addressable:
        image = image.addressable_data(0)
    return np.asarray(image[:1])


def _with_mask(batch: Mapping) -> dict:
    """The batch with an all-True "mask" (unless it has one), so every validation batch, the short
    last one included after padding, has the same structure and the step compiles once."""
    if "mask" in batch:
        return dict(batch)
    return {**batch, "mask": np.ones(np.shape(batch["label"])[0], bool)}


_all_finite = jax.jit(all_finite)


def _learning_rate_of(learning_rate, opt_state, step: int) -> float | None:
    """The learning rate of update `step` (0-based), or None when it cannot be known."""
    if learning_rate is not None:
        return float(learning_rate(step)) if callable(learning_rate) else float(learning_rate)
    found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
             if len(path) >= 2 and getattr(path[-2], "name", None) == "hyperparams"
             and getattr(path[-1], "key", None) == "learning_rate"]
    return float(np.asarray(jax.device_get(found[0])).reshape(-1)[0]) if len(found) == 1 else None


def _sums(host: Sequence[Mapping]) -> tuple[float, float, int]:
    """(loss sum, correct, count) over fetched per-step metric dicts, accumulated in float64 / int."""
    return (math.fsum(float(m["loss"]) for m in host), float(sum(int(m["correct"]) for m in host)),
            int(sum(int(m["count"]) for m in host)))


def _write_text(path: str, text: str) -> None:
    """Write a file atomically (temporary file, then rename), so a reader never sees half of it."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot_history(history: History, path: str | os.PathLike) -> None:
    """Save `curves.png`-style plots of a `History`: loss and error (%) per epoch, train and validation.

    Uses matplotlib's object API (`matplotlib.figure.Figure`, Agg canvas), so it never opens a window or
    touches pyplot's global state. The file is written atomically.
    """
    from matplotlib.figure import Figure

    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    for ax, name, scale, label in ((ax_loss, "loss", 1.0, "loss"), (ax_err, "error", 100.0, "error (%)")):
        ax.plot(epochs, scale * np.asarray(getattr(history, f"train_{name}"), float), "o-", label="train")
        if len(getattr(history, f"val_{name}")):
            ax.plot(epochs, scale * np.asarray(getattr(history, f"val_{name}"), float), "s-", label="validation")
        if history.best_epoch is not None:
            ax.axvline(history.best_epoch, color="gray", linestyle=":", label=f"best (epoch {history.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_title("loss")
    ax_err.set_title("error")
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def _write_logs(log_dir: str | None, history: History) -> None:
    if log_dir is None or not len(history):
        return
    os.makedirs(log_dir, exist_ok=True)
    _write_text(os.path.join(log_dir, "history.json"), history.to_json() + "\n")
    plot_history(history, os.path.join(log_dir, "curves.png"))


def _train_epoch(steps: CompiledSteps, state: TrainState, batches: Batches, epoch: int,
                 bar: ProgressBar) -> tuple[TrainState, list[dict], float, int | None]:
    """Run one epoch. Returns `(state, per-step host metrics, seconds, index of the first non-finite
    loss or None)`; stops early at a non-finite loss seen while refreshing."""
    pending: list[dict] = []  # per-step metric sums, device scalars
    host: list[dict] = []     # the same, fetched, for steps 0 .. len(host) - 1
    start = last = time.perf_counter()

    def fetch(upto: int) -> int | None:
        host.extend(jax.device_get(pending[len(host):upto]))
        bad = next((i for i, m in enumerate(host) if not np.isfinite(m["loss"])), None)
        loss, correct, count = _sums(host)
        bar.update(len(host), loss=loss / max(count, 1), accuracy=correct / max(count, 1),
                   images_per_sec=count / max(time.perf_counter() - start, 1e-9))
        return bad

    with batches.epoch(epoch) as it:
        for i, batch in enumerate(it):
            state, metrics = steps.train(state, steps.put_batch(batch, global_batch_size=batches.batch_size))
            pending.append(metrics)
            now = time.perf_counter()
            if i >= 1 and now - last >= _REFRESH_SECONDS:
                last = now
                # Fetch only steps before the one just dispatched: they are (nearly) done, the device stays busy.
                bad = fetch(i)
                if bad is not None:
                    return state, host, time.perf_counter() - start, bad
    bad = fetch(len(pending))
    return state, host, time.perf_counter() - start, bad


def _non_finite(fn: str, host: list[dict], bad: int, step: int, epoch: int, num_batches: int,
                checkpoints: Checkpoints | None) -> NonFiniteLossError:
    """The error for a non-finite loss at the epoch's step `bad` (0-based; `step` = the epoch's first step)."""
    latest = None if checkpoints is None else checkpoints.latest()
    good = None if latest is None else checkpoints.path(latest)
    loss = float(host[bad]["loss"])
    what = (f"the training loss is {loss}" if not math.isfinite(loss)
            else "the parameters are not finite after the update")
    where = (f"the last good checkpoint, {good!r}, is kept (resume=True continues from it)" if good
             else "no checkpoint was saved (pass checkpoint_dir= to keep one)")
    return NonFiniteLossError(
        f"{fn}: {what} at step {step + bad} (epoch {epoch + 1}, batch {bad + 1} of {num_batches}); training "
        f"stopped. Lower the learning rate or clip the gradients; {where}.",
        step=step + bad, epoch=epoch + 1, batch=bad + 1, checkpoint=good)


def _evaluate(steps: CompiledSteps, state: TrainState, batches: Batches) -> tuple[float, float, int]:
    """(loss sum, correct, count) over every example of `batches`, in evaluation mode."""
    metrics = [steps.eval(state, steps.put_batch(_with_mask(batch), global_batch_size=batches.batch_size))
               for batch in batches.epoch(0)]
    return _sums(jax.device_get(metrics))


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_data, *, val_data=None, epochs: int, batch_size: int | None = None,
        optimizer: optax.GradientTransformation, seed: int = 0, loss_fn: Callable = cross_entropy,
        augment: Callable | None = None, preprocess: Callable | None = None,
        learning_rate: float | optax.Schedule | None = None, early_stopping: EarlyStopping | None = None,
        checkpoint_dir: str | os.PathLike | None = None, keep: int = 3, resume: bool = False,
        progress: bool = True, parallel: str = "auto", devices: Sequence | None = None,
        log_dir: str | os.PathLike | None = None,
        on_epoch_end: Callable[[int, History], None] | None = None,
        precision=None, compiler_options="auto") -> tuple[TrainState, History]:
    """Train `model` for `epochs` epochs; return the final state and the per-epoch `History`.

    Each epoch visits the training data in an order fixed by `(seed, epoch)` (`Batches.epoch`), runs
    the compiled training step on every batch (`compile_steps(parallel)`), evaluates on `val_data`,
    then updates early stopping, saves a checkpoint and writes `history.json` and `curves.png`.

    Args:
      model: a Flax module `model(x, *, train) -> logits`; for `parallel="shard_map"`/`"pmap"` create it
        with `axis_name="batch"` (its BatchNorm layers then synchronise their statistics).
      train_data: `{"image": [N, H, W, C], "label": [N]}` (numpy; uint8 or float images) or a
        `jaxnets.data.Batches`. A dict is batched as `Batches(train_data, batch_size, seed=seed)`:
        shuffled every epoch, the incomplete last batch dropped.
      val_data: the same format, or None. A dict is evaluated in its stored order, every example
        (the last batch padded with masked rows).
      epochs: total number of epochs (a resumed run continues up to it), int >= 1.
      batch_size: examples per (global) batch; required for dict data (must not exceed the training
        examples), optional for `Batches` (must then equal theirs).
      optimizer: an `optax.GradientTransformation` (e.g. `jaxnets.train.optimizer(...)`).
      seed: the run's integer seed: parameter initialisation, dropout/augmentation keys, batch order.
      loss_fn, augment, preprocess: passed to `make_train_step` / `make_eval_step`.
      learning_rate: the optimizer's learning rate (float or schedule), only to record it in
        `History.learning_rate`; without it the rate is read from an `optax.inject_hyperparams`
        optimizer state, if any.
      early_stopping: an `EarlyStopping`, or None to train all epochs.
      checkpoint_dir: directory for orbax checkpoints (see `Checkpoints`): one per epoch, keeping the
        `keep` most recent and the best; None: no checkpoints. A directory that already holds
        checkpoints needs `resume=True`.
      keep: number of recent checkpoints kept (the best one is kept in addition).
      resume: continue from the latest checkpoint in `checkpoint_dir` (if there is none, start fresh).
        The run then ends with exactly the parameters of an uninterrupted run (bitwise on CPU).
      progress: show a tqdm bar per epoch (loss, accuracy, images/s) on stderr; it is shown only when
        stderr is a terminal, and only by process 0.
      parallel: "auto", "none", "sharded", "shard_map" or "pmap" (`compile_steps`); `devices`: the
        devices to use (default all); `compiler_options`: XLA options, as in `compile_steps` ("auto": on
        CPU, XLA's own convolutions instead of YNNPACK's; None: XLA's defaults).
      log_dir: where `history.json` and `curves.png` are written after every epoch (process 0 only);
        default `checkpoint_dir`; None and no `checkpoint_dir`: nothing is written.
      on_epoch_end: called as `on_epoch_end(epoch, history)` after each epoch (1-based `epoch`), on
        every process (e.g. to print a line per epoch).
      precision: None (float32), a dtype name ("bfloat16", "float16") or a `jaxnets.train.Policy`
        (`jaxnets.train.precision`): training and validation compute in its dtype with float32 master
        parameters; float16 adds dynamic loss scaling, whose state is checkpointed with the run. A
        resume must use the same precision.

    Returns: `(state, history)`. `state` holds one copy of every array (pmap's device axis removed).
      Without early stopping it is the state after the last epoch. With early stopping it is the
      whole state (params, batch_stats, opt_state, step) at the end of the BEST epoch,
      `history.best_epoch`; `history` still lists every epoch run.
      The "best" epoch (kept as a checkpoint, marked in the plots) is the one with the lowest
      `early_stopping.monitor` (improvement by more than its `min_delta`), else the lowest
      validation loss, else the lowest training loss.

    Raises:
      NonFiniteLossError: a training step's loss is nan or inf (or the parameters are after an
        epoch). The message names the step; the last good checkpoint (if any) is left untouched, and
        `history.json` holds the completed epochs.
      ValueError / TypeError: bad arguments, named in the message (e.g. a batch size larger than the
        training set, an early-stopping monitor on validation data without `val_data`, existing
        checkpoints without `resume=True`, a checkpoint from a run with another seed or batch size).

    Multi-process runs (`jaxnets.train.distributed`): call `fit` on every process with the same
    arguments; each process loads its rows of every batch, the metrics are global, orbax
    coordinates the checkpoint writes, and only process 0 shows progress and writes the logs.

    PyTorch: the usual `for epoch: for x, y in loader: ...` loop with `torch.save` checkpoints.
    """
    fn = "fit"
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"{fn}: epochs must be an int >= 1, got {epochs!r}.")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{fn}: seed must be a non-negative int, got {seed!r}.")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"{fn}: early_stopping must be an EarlyStopping or None, got {type(early_stopping).__name__}.")
    if early_stopping is not None and early_stopping.monitor.startswith("val_") and val_data is None:
        raise ValueError(f"{fn}: early_stopping monitors {early_stopping.monitor!r} but val_data is None; pass "
                         f"val_data or monitor 'train_loss'/'train_error'.")
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs checkpoint_dir (the directory of the run to continue).")
    train_batches = _as_batches(fn, "train_data", train_data, batch_size, train=True, seed=int(seed))
    val_batches = None if val_data is None else _as_batches(fn, "val_data", val_data, train_batches.batch_size,
                                                            train=False, seed=int(seed))
    epochs, seed = int(epochs), int(seed)
    monitor = early_stopping.monitor if early_stopping else ("val_loss" if val_batches else "train_loss")
    best = _Best(early_stopping.min_delta if early_stopping else 0.0)
    log_dir = os.fspath(log_dir) if log_dir is not None else (
        os.fspath(checkpoint_dir) if checkpoint_dir is not None else None)
    main = is_main_process()  # process 0 writes the logs and shows progress
    policy = None if precision is None else as_policy(fn, precision)
    steps = _compiled(parallel, loss_fn, preprocess, augment, None if devices is None else tuple(devices), policy,
                      _hashable_options(compiler_options))
    # What a checkpoint must agree on for a resume to continue the same run.
    run = {"seed": seed, "batch_size": train_batches.batch_size, "train_examples": train_batches.num_examples,
           "monitor": monitor}
    if policy is not None and not policy.is_float32:
        run["precision"] = str(policy)  # only then: float32 checkpoints read as before

    fresh = TrainState.create(model, optimizer, _sample_input(train_data, train_batches), seed, precision=policy)
    state, history, start, best_state = fresh, History(), 0, None
    checkpoints = None if checkpoint_dir is None else Checkpoints(checkpoint_dir, keep=keep)
    try:
        if checkpoints is not None and checkpoints.latest() is not None:
            if not resume:
                raise ValueError(f"{fn}: checkpoint_dir {checkpoints.directory!r} already holds checkpoints (epochs "
                                 f"{checkpoints.epochs()}); pass resume=True to continue that run, or use a new "
                                 f"directory.")
            saved = checkpoints.meta()["run"]  # checked before the arrays, whose tree may differ (loss_scale)
            changed = {k: (saved.get(k), run.get(k)) for k in sorted(set(run) | set(saved)) if saved.get(k) != run.get(k)}
            if changed:
                raise ValueError(f"{fn}: cannot resume from {checkpoints.directory!r}: the run was saved with "
                                 f"different settings, {{setting: (saved, now)}} = {changed}.")
            state, meta = checkpoints.restore(fresh)
            history, start = History.from_dict(meta["history"]), int(meta["epoch"])
            best.load(meta["best"])
            if early_stopping is not None and best.epoch is not None:
                best_state = state if best.epoch == start else checkpoints.restore(fresh, best.epoch)[0]
        step = int(state.step)
        placed = steps.put_state(state)
        show = progress_enabled(progress) and main
        for epoch in range(start, epochs):
            if early_stopping is not None and best.bad_epochs >= early_stopping.patience:
                break  # a resumed run that had already stopped
            history.stopped_early = False  # resumed with other (or no) early stopping: the run goes on
            started = time.perf_counter()
            bar = ProgressBar(len(train_batches), epoch=epoch + 1, epochs=epochs, enabled=show)
            summary = None
            try:
                placed, host, seconds, bad = _train_epoch(steps, placed, train_batches, epoch, bar)
                if bad is None and not bool(_all_finite((steps.get_state(placed).params,
                                                         steps.get_state(placed).batch_stats))):
                    bad = len(host) - 1  # finite losses but non-finite parameters after the last update
                if bad is not None:
                    raise _non_finite(fn, host, bad, step, epoch, len(train_batches), checkpoints)
                step += len(host)
                loss, correct, count = _sums(host)
                history.train_loss.append(loss / count)
                history.train_error.append(1.0 - correct / count)
                history.images_per_sec.append(count / seconds)
                if val_batches is not None:
                    v_loss, v_correct, v_count = _evaluate(steps, placed, val_batches)
                    history.val_loss.append(v_loss / v_count)
                    history.val_error.append(1.0 - v_correct / v_count)
                    summary = f"val_loss={v_loss / v_count:.4f}, val_acc={100 * v_correct / v_count:.2f}%"
            finally:
                bar.close(summary)
            rate = _learning_rate_of(learning_rate, steps.get_state(placed).opt_state, step - 1)
            if rate is not None:
                history.learning_rate.append(rate)
            history.wall_time.append((history.wall_time[-1] if history.wall_time else 0.0)
                                     + time.perf_counter() - started)
            improved = best.update(getattr(history, monitor)[-1], epoch + 1)
            if improved and early_stopping is not None:
                best_state = snapshot(steps.get_state(placed))
            history.best_epoch = best.epoch
            if early_stopping is not None and best.bad_epochs >= early_stopping.patience:
                history.stopped_early = True
            if checkpoints is not None:
                checkpoints.save(epoch + 1, steps.get_state(placed), best_rank=best.rank if improved else -1,
                                 meta={"epoch": epoch + 1, "history": history.to_dict(), "best": best.to_dict(),
                                       "run": run})
            if main:
                _write_logs(log_dir, history)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history)
            if history.stopped_early:
                break
    finally:
        if checkpoints is not None:
            checkpoints.close()  # waits for the last save to be committed
    final = best_state if (early_stopping is not None and best_state is not None) else steps.get_state(placed)
    return final, history


def evaluate(state: TrainState, data, *, batch_size: int = 256, loss_fn: Callable = cross_entropy,
             preprocess: Callable | None = None, parallel: str = "auto", precision=None,
             compiler_options="auto") -> dict[str, float | int]:
    """Mean loss and accuracy of `state` on every example of `data`, in evaluation mode.

    Args:
      state: a `TrainState` with one copy of every array (as `fit` returns).
      data: `{"image": [N, H, W, C], "label": [N]}` or a `Batches`; every example counts once (the
        last, short batch is padded with masked rows).
      batch_size: examples per forward pass (for a dict `data`).
      loss_fn, preprocess, precision: as in `make_eval_step`; `parallel`, `compiler_options`: as in
        `compile_steps`.
    Returns: `{"loss": mean loss, "accuracy": correct / count, "correct": int, "count": int}`.
    PyTorch: `model.eval(); with torch.no_grad(): ...` over a DataLoader.
    """
    batches = _as_batches("evaluate", "data", data, None if isinstance(data, Batches) else batch_size,
                          train=False, seed=0)
    policy = None if precision is None else as_policy("evaluate", precision)
    steps = _compiled(parallel, loss_fn, preprocess, None, None, policy, _hashable_options(compiler_options))
    loss, correct, count = _evaluate(steps, steps.put_state(state), batches)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1), "correct": int(correct),
            "count": int(count)}


# ----------------------------------------------------------------------------------------------
# recompute_batch_stats
# ----------------------------------------------------------------------------------------------
def _module_path(module: nn.Module) -> tuple[str, ...]:
    return tuple(module.scope.path) if module.scope is not None else ()


def _batch_norm_order(fn: str, state: TrainState, x) -> list[tuple[str, ...]]:
    """Paths of the BatchNorm layers in the order the model first calls them (traced, nothing computed)."""
    order: list[tuple[str, ...]] = []

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, nn.BatchNorm):
            raise ValueError(f"{fn}: the model uses flax.linen.BatchNorm at {'/'.join(_module_path(module))!r}; "
                             f"only jaxnets.nn.BatchNorm layers are supported.")
        if context.method_name == "__call__" and isinstance(module, BatchNorm):
            path = _module_path(module)
            if path not in order:
                order.append(path)
        return next_fun(*args, **kwargs)

    def run(variables, x):
        with nn.intercept_methods(intercept):
            return state.apply_fn(variables, x, train=False)

    jax.eval_shape(run, state.variables, x)
    return order


def _moments(x: jax.Array, mask: jax.Array, channels_last: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-channel (count, mean, sum of squared deviations) over the valid rows of `x`, two-pass."""
    axis = x.ndim - 1 if (channels_last or x.ndim == 2) else 1
    axes = tuple(a for a in range(x.ndim) if a != axis)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    w = jnp.broadcast_to(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape).astype(x.dtype)
    count = jnp.sum(w, axis=axes)
    mean = jnp.sum(x * w, axis=axes) / jnp.maximum(count, 1)
    shape = [1] * x.ndim
    shape[axis] = -1
    m2 = jnp.sum(jnp.square((x - mean.reshape(shape)) * w), axis=axes)
    return count, mean, m2


def _merge(total, part):
    """Chan et al.'s parallel update of (count, mean, M2), in float64."""
    if total is None:
        return part
    (na, ma, sa), (nb, mb, sb) = total, part
    n = na + nb
    delta = mb - ma
    safe = np.maximum(n, 1)
    return n, ma + delta * nb / safe, sa + sb + delta ** 2 * na * nb / safe


def recompute_batch_stats(state: TrainState, data, *, batch_size: int = 256,
                          preprocess: Callable | None = None) -> TrainState:
    """Replace the running BatchNorm statistics by exact population statistics over `data`, layer by layer.

    For the BatchNorm layers in the order the model calls them, layer `k`'s statistics are computed
    from its inputs over the whole of `data`, with the model in evaluation mode and the layers before
    `k` already using their NEW statistics (so every layer is normalised with the statistics of the
    inputs it will actually see at test time):

        mean_k = sum_i x_i / n,    var_k = sum_i (x_i - mean_k)^2 / (n - 1)     (per channel)

    over all `n` values of the channel (examples x spatial positions). The variance is the UNBIASED
    one, as BatchNorm's running variance (PyTorch's `running_var`) is. Each batch's moments are
    computed on the device in float32 (two-pass), and merged across batches on the host in float64
    (Chan et al.'s parallel formula). Costs one pass over `data` per BatchNorm layer, each stopping at
    that layer (the rest of the network is dead code that XLA removes). No augmentation is applied.

    The alternative to the running averages of training (`momentum`): the same as PyTorch's
    `BatchNorm(momentum=None)` cumulative average run over the data in eval-mode order, but exact.

    Args:
      state: a `TrainState` (one copy of every array, as `fit` returns).
      data: `{"image": [N, H, W, C], "label": [N]}` (labels are ignored), or a `Batches`, used as given
        (create it with `shuffle=False, drop_last=False` so that every example counts once).
      batch_size: examples per forward pass (for a dict `data`).
      preprocess: images -> float model inputs; default `data.augment.to_float`, as in training.
    Returns: `state` with new `batch_stats` (float32); everything else unchanged. A model without
      BatchNorm gets `state` back.
    Raises:
      ValueError: a model that uses `flax.linen.BatchNorm` (only `jaxnets.nn.BatchNorm` is supported),
        or fewer than 2 values per channel for some layer.
    PyTorch: `torch.optim.swa_utils.update_bn(loader, model)` (one pass with momentum=None, every layer
      at once, in training mode: each layer's input then depends on the batch statistics of the
      layers before it, not on their population statistics).
    """
    fn = "recompute_batch_stats"
    if not state.batch_stats:
        return state
    preprocess = to_float if preprocess is None else preprocess
    if isinstance(data, Batches):
        batches = data
    else:
        if not isinstance(data, Mapping) or "image" not in data:
            raise TypeError(f"{fn}: data must be a dict with 'image' [N, H, W, C] or a Batches, got "
                            f"{type(data).__name__}.")
        images = np.asarray(data["image"])
        batches = Batches({"image": images}, min(int(batch_size), len(images)), shuffle=False, drop_last=False)
    size = batches.batch_size
    with batches.epoch(0) as it:
        first = np.asarray(next(it)["image"])
    order = _batch_norm_order(fn, state, preprocess(jnp.asarray(first[:1])))
    stats = flax.core.unfreeze(state.batch_stats)  # a new nested dict: the input state stays valid

    for target in order:
        def layer_moments(variables, images, mask, target=target):
            captured = []

            def intercept(next_fun, args, kwargs, context):
                module = context.module
                if (context.method_name == "__call__" and isinstance(module, BatchNorm)
                        and _module_path(module) == target):
                    x = args[0] if args else kwargs["x"]
                    captured.append(_moments(x, mask, is_channels_last(fn, module.layout)))
                return next_fun(*args, **kwargs)

            with nn.intercept_methods(intercept):
                state.apply_fn(variables, preprocess(images), train=False)
            return captured

        compute = jax.jit(layer_moments)
        variables = {"params": state.params, "batch_stats": stats}
        parts = []
        for batch in batches.epoch(0):
            images = np.asarray(batch["image"])
            n = len(images)
            mask = np.arange(size) < n
            if n < size:  # pad the last batch to the full size (masked), so it compiles once
                images = np.concatenate([images, np.zeros((size - n,) + images.shape[1:], images.dtype)])
            parts.extend(compute(variables, images, mask))
        total = None
        for count, mean, m2 in jax.device_get(parts):
            total = _merge(total, (count.astype(np.float64), mean.astype(np.float64), m2.astype(np.float64)))
        count, mean, m2 = total
        if np.any(count < 2):
            raise ValueError(f"{fn}: BatchNorm {'/'.join(target)!r} sees {int(count.min())} value(s) per channel "
                             f"over the data; at least 2 are needed for the unbiased variance.")
        node = stats
        for name in target[:-1]:
            node = node[name]
        old = node[target[-1]]
        node[target[-1]] = {**old, "mean": jnp.asarray(mean, old["mean"].dtype),
                            "var": jnp.asarray(m2 / (count - 1), old["var"].dtype)}
    return state.replace(batch_stats=stats)
