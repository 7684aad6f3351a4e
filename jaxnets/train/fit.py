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

and `fit` itself reads as: check the arguments, compile (cached), resume, then per epoch
`_train_and_validate`, `_record_epoch`, `_save_epoch`. The run records (`History`, `EarlyStopping`,
log files) live in `history.py`, `evaluate` in `evaluation.py`, `recompute_batch_stats` in
`batch_stats.py`; their names are importable from here as before.

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

import contextlib
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxnets.checks import check_bool, check_int, check_positive_int
from jaxnets.data.batches import Batches
from jaxnets.data.pipeline import Loader
from jaxnets.layers.losses import cross_entropy
from jaxnets.train.batch_stats import recompute_batch_stats
from jaxnets.train.checkpoint import Checkpoints, snapshot
from jaxnets.train.compile_cache import cached_compile_steps
from jaxnets.train.distributed import is_main_process
from jaxnets.data.validation import check_dataset
from jaxnets.train.evaluation import (as_batches, check_model_data, eval_sums, evaluate, metric_sums,
                                     sources_as_batches)
from jaxnets.train.history import (MONITORS, BestMetric, EarlyStopping, History, NonFiniteLossError, learning_rate_of,
                                   plot_history, write_logs)
from jaxnets.train.parallel import CompiledSteps
from jaxnets.train.plateau import ReduceLROnPlateau
from jaxnets.train.precision import all_finite, as_policy
from jaxnets.train.progress import ProgressBar, progress_enabled
from jaxnets.train.state import TrainState
from jaxnets.train.steps import model_takes_mask
from jaxnets.train.tensorboard import TensorBoardLog, check_tensorboard

__all__ = ["fit", "evaluate", "History", "EarlyStopping", "NonFiniteLossError", "recompute_batch_stats",
           "plot_history", "MONITORS"]

_REFRESH_SECONDS = 0.5  # how often the loop fetches finished steps' metrics (progress bar, non-finite check)
_all_finite = jax.jit(all_finite)


# ----------------------------------------------------------------------------------------------
# helpers: arguments, resume, one epoch, records
# ----------------------------------------------------------------------------------------------
def check_fit_arguments(fn: str, *, epochs, optimizer, seed, early_stopping, val_data, resume, checkpoint_dir) -> None:
    check_positive_int(fn, "epochs", epochs)
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{fn}: optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}.")
    check_int(fn, "seed", seed, minimum=0)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(f"{fn}: early_stopping must be an EarlyStopping or None, got {type(early_stopping).__name__}.")
    if early_stopping is not None and early_stopping.monitor.startswith("val_") and val_data is None:
        raise ValueError(f"{fn}: early_stopping monitors {early_stopping.monitor!r} but val_data is None; pass "
                         f"val_data or monitor 'train_loss'/'train_error'.")
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs checkpoint_dir (the directory of the run to continue).")


def sample_input(data, batches: Batches):
    """One example `[1, H, W, C]`, for `TrainState.create` (only its shape and dtype are used)."""
    if isinstance(data, Mapping):
        return np.asarray(data["image"][:1])
    if isinstance(batches, Loader):  # shape and dtype known without reading (which would restart its workers)
        image = batches.arrays["image"]
        return np.zeros((1,) + tuple(image.shape[1:]), image.dtype)
    with batches.epoch(0) as it:
        image = next(it)["image"]
    if isinstance(image, jax.Array) and not image.is_fully_addressable:
        image = image.addressable_data(0)
    return np.asarray(image[:1])


def check_not_channels_first(fn: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    """ValueError for training images that look like NCHW (`[N, C, H, W]` with C in {1, 3, 4} and a last
    axis that is not a channel count) given to a channels-last model, before the model is initialised
    on them. A model declaring a channels-first `layout` is left alone."""
    layout = getattr(model, "layout", "NHWC")
    if len(shape) != 4 or (isinstance(layout, str) and layout.startswith("NC")):
        return
    channels, last = shape[1], shape[-1]
    if channels in (1, 3, 4) and last not in (1, 3, 4) and shape[2] > 4:
        raise ValueError(f"{fn}: train_data['image'] has shape [N, {', '.join(map(str, shape[1:]))}], which looks like "
                         f"NCHW (channels first), but the model takes NHWC (channels last); transpose the images "
                         f"with x.transpose(0, 2, 3, 1).")


def check_same_run(fn: str, directory: str, saved: dict, run: dict) -> None:
    """ValueError unless the settings `saved` in a checkpoint's meta equal the run's `run` (a resume must
    continue the same run); the message lists every setting that differs as (saved, now)."""
    changed = {k: (saved.get(k), run.get(k)) for k in sorted(set(run) | set(saved)) if saved.get(k) != run.get(k)}
    if changed:
        raise ValueError(f"{fn}: cannot resume from {directory!r}: the run was saved with different settings, "
                         f"{{setting: (saved, now)}} = {changed}.")


def _same_run(fn: str, directory: str, run: dict) -> Callable[[dict], None]:
    """A check of a checkpoint's meta: ValueError unless it was saved by a run with the settings `run`."""
    def same_run(meta: dict) -> None:  # checked before the arrays, whose tree may differ (loss_scale)
        check_same_run(fn, directory, meta["run"], run)
    return same_run


def _resume(fn: str, checkpoints: Checkpoints | None, fresh: TrainState, run: dict, *, resume: bool,
            best: BestMetric, early_stopping: EarlyStopping | None, plateau: ReduceLROnPlateau | None
            ) -> tuple[TrainState, History, int, TrainState | None]:
    """`(state, history, first epoch, best state)` of the run: fresh, or continued from the latest checkpoint
    (which must come from a run with the same settings `run`); `best` is loaded from it."""
    if checkpoints is None or checkpoints.latest() is None:
        return fresh, History(), 0, None
    if not resume:
        raise ValueError(f"{fn}: checkpoint_dir {checkpoints.directory!r} already holds checkpoints (epochs "
                         f"{checkpoints.epochs()}); pass resume=True to continue that run, or use a new "
                         f"directory.")
    # The newest intact epoch: a damaged newer one is skipped with a warning (and set aside as <epoch>.corrupt).
    state, meta, _ = checkpoints.restore_latest_intact(fresh, check_meta=_same_run(fn, checkpoints.directory, run))
    history, start = History.from_dict(meta["history"]), int(meta["epoch"])
    best.load(meta["best"])
    if plateau is not None and "plateau" in meta:
        plateau.load_state_dict(meta["plateau"])
    best_state = None
    if early_stopping is not None and best.epoch is not None:
        best_state = state if best.epoch == start else checkpoints.restore(fresh, best.epoch)[0]
    return state, history, start, best_state


# Mid-epoch checkpoints (`checkpoint_every`): saved under checkpoint_dir/mid_epoch, keyed by the global step.
MID_EPOCH_DIR = "mid_epoch"


def _check_checkpoint_every(fn: str, checkpoint_every, checkpoint_dir) -> None:
    if checkpoint_every is None:
        return
    check_positive_int(fn, "checkpoint_every", checkpoint_every)
    if checkpoint_dir is None:
        raise ValueError(f"{fn}: checkpoint_every={checkpoint_every} needs checkpoint_dir (where the mid-epoch "
                         f"checkpoints are saved).")


def _mid_epoch_checkpoints(checkpoint_dir, checkpoint_every: int | None) -> Checkpoints | None:
    """The store of mid-epoch checkpoints, `Checkpoints(checkpoint_dir/mid_epoch, keep=1)`, or None."""
    if checkpoint_every is None:
        return None
    return Checkpoints(os.path.join(os.fspath(checkpoint_dir), MID_EPOCH_DIR), keep=1)


def _resume_mid_epoch(fn: str, mid: Checkpoints | None, checkpoints: Checkpoints | None, fresh: TrainState,
                      run: dict, resumed: tuple, *, resume: bool, best: BestMetric,
                      early_stopping: EarlyStopping | None, plateau: ReduceLROnPlateau | None) -> tuple:
    """`(state, history, epoch, first batch, the epoch's metrics so far, best state)`: `resumed` (what
    `_resume` returned, from batch 0) unless a mid-epoch checkpoint newer than it exists; then that one,
    with its position `(epoch, batch)` in the data and the per-step metrics of the batches before it."""
    state, history, start, best_state = resumed
    if mid is None or mid.latest() is None or mid.latest() <= int(state.step):
        return state, history, start, 0, [], best_state
    if not resume:
        raise ValueError(f"{fn}: checkpoint_dir holds mid-epoch checkpoints in {mid.directory!r} (steps "
                         f"{mid.epochs()}); pass resume=True to continue that run, or use a new directory.")
    restored, meta, _ = mid.restore_latest_intact(fresh, check_meta=_same_run(fn, mid.directory, run))
    if int(restored.step) <= int(state.step):  # the newer ones were damaged: the epoch checkpoint is newer
        return state, history, start, 0, [], best_state
    best.load(meta["best"])
    if plateau is not None and "plateau" in meta:
        plateau.load_state_dict(meta["plateau"])
    if early_stopping is not None and best.epoch is not None:
        best_state = checkpoints.restore(fresh, best.epoch)[0]
    position = meta["position"]
    return (restored, History.from_dict(meta["history"]), int(position["epoch"]), int(position["batch"]),
            meta["metrics"], best_state)


def _mid_epoch_saver(mid: Checkpoints | None, every: int | None, steps: CompiledSteps, *, epoch: int,
                     first_step: int, num_batches: int, history: History, best: BestMetric, run: dict,
                     extra: dict) -> Callable | None:
    """`on_step(done, placed state, fetch)` for `_train_epoch`: after the epoch's batch `done` (1-based), when
    the global step `first_step + done` is a multiple of `every` and the epoch is not over (its end has its own
    checkpoint), save the state with the data position `(epoch, done)` and the fetched per-step metrics."""
    if mid is None:
        return None

    def on_step(done: int, placed: TrainState, fetch: Callable[[], list[dict]]) -> None:
        step = first_step + done
        if step % every or done >= num_batches:
            return
        host = [{k: np.asarray(v).tolist() for k, v in m.items()} for m in fetch()]
        if not all(math.isfinite(m["loss"]) for m in host):
            return  # the epoch's own check reports it
        mid.save(step, steps.get_state(placed), best_rank=-1,
                 meta={"epoch": step, "position": {"epoch": epoch, "batch": done}, "metrics": host,
                       "history": history.to_dict(), "best": best.to_dict(), "run": run, **extra})
    return on_step


@contextlib.contextmanager
def _epoch_from(batches: Batches, epoch: int, start: int):
    """The batches of epoch `epoch` from its batch `start` on: a `Loader` seeks there (nothing before it is
    read), a `Batches` skips the first `start` batches."""
    if isinstance(batches, Loader):
        with batches.epoch(epoch, start=start) as it:
            yield it
    else:
        with batches.epoch(epoch) as it:
            yield itertools.islice(it, start, None)


def _train_epoch(steps: CompiledSteps, state: TrainState, batches: Batches, epoch: int, bar: ProgressBar,
                 pad_to: int | None, *, stop_on_non_finite: bool = True, first_batch: int = 0, prior: Sequence = (),
                 on_step: Callable | None = None, tensorboard: TensorBoardLog | None = None, first_step: int = 0
                 ) -> tuple[TrainState, list[dict], float, int | None]:
    """Run one epoch (batches placed by `put_batch(batch, global_batch_size=pad_to)`). Returns `(state,
    per-step host metrics, seconds, index of the first non-finite loss or None)`; stops early at a
    non-finite loss seen while refreshing, unless `stop_on_non_finite` is False (a loss scaler skips
    those steps). A resumed epoch starts at batch `first_batch`, with `prior` the host metrics of the batches
    before it; `on_step(done, state, fetch)` runs after every step (`fetch()` returns all host metrics).
    Each refresh also logs the newly fetched steps to `tensorboard` (the epoch's first update is number
    `first_step`)."""
    pending: list[dict] = list(prior)  # per-step metric sums, device scalars
    host: list[dict] = list(prior)     # the same, fetched, for steps 0 .. len(host) - 1
    start = last = time.perf_counter()

    def fetch(upto: int) -> int | None:
        done = len(host)
        host.extend(jax.device_get(pending[done:upto]))
        _log_steps(tensorboard, host[done:], first_step + len(host))
        bad = next((i for i, m in enumerate(host) if not np.isfinite(m["loss"])), None)
        loss, correct, count = metric_sums([m for m in host if np.isfinite(m["loss"])])
        bar.update(len(host), loss=loss / max(count, 1), accuracy=correct / max(count, 1),
                   images_per_sec=count / max(time.perf_counter() - start, 1e-9))
        return bad

    def fetch_all() -> list[dict]:
        fetch(len(pending))
        return host

    with _epoch_from(batches, epoch, first_batch) as it:
        for i, batch in enumerate(it, first_batch):
            state, metrics = steps.train(state, steps.put_batch(batch, global_batch_size=pad_to))
            pending.append(metrics)
            if on_step is not None:
                on_step(i + 1, state, fetch_all)
            now = time.perf_counter()
            if i >= 1 and now - last >= _REFRESH_SECONDS:
                last = now
                # Fetch only steps before the one just dispatched: they are (nearly) done, the device stays busy.
                bad = fetch(i)
                if bad is not None and stop_on_non_finite:
                    return state, host, time.perf_counter() - start, bad
    bad = fetch(len(pending))
    return state, host, time.perf_counter() - start, bad


def _log_steps(tensorboard: TensorBoardLog | None, fetched: list[dict], last_step: int) -> None:
    """TensorBoard's per-step point from the metrics a refresh just fetched (no further device transfer)."""
    if tensorboard is not None and fetched:
        tensorboard.steps(fetched, last_step)


def _non_finite(fn: str, host: list[dict], bad: int, step: int, epoch: int, num_batches: int,
                checkpoints: Checkpoints | None, history: History) -> NonFiniteLossError:
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
        step=step + bad, epoch=epoch + 1, batch=bad + 1, checkpoint=good, history=history)


def _train_and_validate(fn: str, steps: CompiledSteps, placed: TrainState, step: int, epoch: int, *,
                        train_batches: Batches, val_batches: Batches | None, pad_to: int | None, history: History,
                        checkpoints: Checkpoints | None, bar: ProgressBar, first_batch: int = 0, prior: Sequence = (),
                        on_step: Callable | None = None, tensorboard: TensorBoardLog | None = None
                        ) -> tuple[TrainState, int]:
    """Train epoch `epoch` (0-based) from update `step` (the epoch's first; a resumed epoch runs from its batch
    `first_batch`, see `_train_epoch`), then validate; append the epoch's training and validation metrics to
    `history`. Returns `(placed state, step after the epoch)`.
    Raises NonFiniteLossError for a non-finite loss (or non-finite parameters after the epoch)."""
    summary = None
    # With a loss scaler (float16) a non-finite loss is the scaler's business: it skips that update, as
    # torch's GradScaler does; only non-finite parameters, or an epoch with no finite step, stop the run.
    scaled = steps.get_state(placed).loss_scale is not None
    try:
        placed, host, seconds, bad = _train_epoch(steps, placed, train_batches, epoch, bar, pad_to,
                                                  stop_on_non_finite=not scaled, first_batch=first_batch, prior=prior,
                                                  on_step=on_step, tensorboard=tensorboard, first_step=step)
        finite = [m for m in host if np.isfinite(m["loss"])]
        if scaled:
            bad = 0 if not finite else None
            if finite and len(finite) < len(host):
                warnings.warn(f"{fn}: the training loss was not finite in {len(host) - len(finite)} of {len(host)} "
                              f"steps of epoch {epoch + 1} (float16 overflow); the loss scaler skipped those "
                              f"updates, as torch.amp.GradScaler does, and the epoch's training loss leaves them "
                              f"out.", RuntimeWarning, stacklevel=3)
        if bad is None and not bool(_all_finite((steps.get_state(placed).params,
                                                 steps.get_state(placed).batch_stats))):
            bad = len(host) - 1  # finite losses but non-finite parameters after the last update
        if bad is not None:
            raise _non_finite(fn, host, bad, step, epoch, len(train_batches), checkpoints, history)
        loss, correct, count = metric_sums(finite)
        history.train_loss.append(loss / count)
        history.train_error.append(1.0 - correct / count)
        history.images_per_sec.append(count / seconds)
        if val_batches is not None:
            summary = _validate(steps, placed, val_batches, history)
    finally:
        bar.close(summary)
    return placed, step + len(host)


def _validate(steps: CompiledSteps, placed: TrainState, val_batches: Batches, history: History) -> str:
    """Append the validation loss and error to `history`; returns the progress bar's summary line."""
    v_loss, v_correct, v_count = eval_sums(steps, placed, val_batches)
    history.val_loss.append(v_loss / v_count)
    history.val_error.append(1.0 - v_correct / v_count)
    return f"val_loss={v_loss / v_count:.4f}, val_acc={100 * v_correct / v_count:.2f}%"


def _record_epoch(history: History, best: BestMetric, epoch: int, *, monitor: str, rate: float | None,
                  started: float, early_stopping: EarlyStopping | None) -> bool:
    """Append the learning rate and wall time, update the best metric and early stopping; returns whether
    epoch `epoch` (0-based) improved the monitored metric."""
    if rate is not None:
        history.learning_rate.append(rate)
    history.wall_time.append((history.wall_time[-1] if history.wall_time else 0.0) + time.perf_counter() - started)
    improved = best.update(getattr(history, monitor)[-1], epoch + 1)
    history.best_epoch = best.epoch
    if _patience_spent(early_stopping, best):
        history.stopped_early = True
    return improved


def _patience_spent(early_stopping: EarlyStopping | None, best: BestMetric) -> bool:
    return early_stopping is not None and best.bad_epochs >= early_stopping.patience


def _save_epoch(checkpoints: Checkpoints | None, epoch: int, state: TrainState, *, history: History,
                best: BestMetric, improved: bool, run: dict, log_dir: str | None, main: bool,
                on_epoch_end: Callable[[int, History], None] | None, extra: dict) -> None:
    """After epoch `epoch` (0-based): checkpoint (with `extra` in its metadata), history.json and curves.png
    (process 0), the callback."""
    if checkpoints is not None:
        checkpoints.save(epoch + 1, state, best_rank=best.rank if improved else -1,
                         meta={"epoch": epoch + 1, "history": history.to_dict(), "best": best.to_dict(), "run": run,
                               **extra})
    if main:
        write_logs(log_dir, history)
    if on_epoch_end is not None:
        on_epoch_end(epoch + 1, history)


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
def fit(model: nn.Module, train_data, *, val_data=None, epochs: int, batch_size: int | None = None,
        optimizer: optax.GradientTransformation | Callable, seed: int | None = None,
        loss_fn: Callable = cross_entropy,
        augment: Callable | None = None, preprocess: Callable | None = None,
        learning_rate: float | optax.Schedule | None = None, early_stopping: EarlyStopping | None = None,
        checkpoint_dir: str | os.PathLike | None = None, keep: int = 3, resume: bool = False,
        progress: bool = True, parallel: str = "auto", devices: Sequence | None = None,
        log_dir: str | os.PathLike | None = None,
        on_epoch_end: Callable[[int, History], None] | None = None,
        precision=None, compiler_options="auto", initial_variables=None,
        drop_last: bool = True, plateau: ReduceLROnPlateau | None = None,
        checkpoint_every: int | None = None, seeds: Sequence[int] | None = None,
        hparams: Mapping[str, Sequence[float]] | None = None, population: str = "auto",
        tensorboard: bool | None = None) -> tuple[TrainState, History]:
    """Train `model` for `epochs` epochs; return the final state and the per-epoch `History`.

    Each epoch visits the training data in an order fixed by `(seed, epoch)` (`Batches.epoch`), runs
    the compiled training step on every batch (`compile_steps(parallel)`), evaluates on `val_data`,
    then updates early stopping, saves a checkpoint and writes `history.json` and `curves.png`.

    Args:
      model: a Flax module `model(x, *, train, mask=None) -> logits` (every jaxnets model; a model of
        your own needs the `mask` keyword only if it has BatchNorm and its training batches get padded
        rows); for `parallel="shard_map"`/`"pmap"` create it with `axis_name="batch"` (its BatchNorm
        layers then synchronise their statistics).
      train_data: `{"image": [N, H, W, C], "label": [N]}` (numpy; uint8 or float images), a
        `jaxnets.data.Batches` (or `jaxnets.data.Loader`), or a source (`jaxnets.data.ImageFolder(root)`,
        `ArraySource`, a `grain.MapDataset`), read as `Loader(source, batch_size, seed=seed, drop_last=drop_last)`
        (no transforms: its images must share one size; build a `Loader` for transforms and workers). A dict is batched as `Batches(train_data, batch_size, seed=seed)`:
        shuffled every epoch, the incomplete last batch dropped (see `drop_last`). Both datasets are
        checked before anything is compiled (`jaxnets.data.check_dataset`, then against the model: its
        input layout and size, labels in `[0, num_classes)`).
      val_data: the same format, or None. A dict is evaluated in its stored order, every example
        (the last batch padded with masked rows).
      epochs: total number of epochs (a resumed run continues up to it), int >= 1.
      batch_size: examples per (global) batch; required for dict data (must not exceed the training
        examples), optional for `Batches` (must then equal theirs).
      optimizer: an `optax.GradientTransformation` (e.g. `jaxnets.train.optimizer(...)`); for a population
        whose `hparams` name optimizer hyperparameters, a function `hp -> GradientTransformation` (see
        `hparams`).
      seed: the run's integer seed (default 0): parameter initialisation, dropout/augmentation keys, batch
        order. Not together with `seeds`.
      loss_fn, augment, preprocess: passed to `make_train_step` / `make_eval_step`.
      learning_rate: the optimizer's learning rate (float or schedule), only to record it in
        `History.learning_rate`; without it the rate is read from an `optax.inject_hyperparams`
        optimizer state, if any.
      early_stopping: an `EarlyStopping`, or None to train all epochs.
      checkpoint_dir: directory for orbax checkpoints (see `Checkpoints`): one per epoch, keeping the
        `keep` most recent and the best; None: no checkpoints. A directory that already holds
        checkpoints needs `resume=True`.
      keep: number of recent checkpoints kept (the best one is kept in addition).
      resume: continue from the latest intact checkpoint in `checkpoint_dir` (if there is none, start
        fresh); its arrays and metadata are verified against their checksums first.
        The run then ends with exactly the parameters of an uninterrupted run (bitwise on CPU).
      progress: show a tqdm bar per epoch (loss, accuracy, images/s) on stderr; it is shown only when
        stderr is a terminal, and only by process 0.
      parallel: "auto", "none", "sharded", "shard_map" or "pmap" (`compile_steps`); `devices`: the
        devices to use (default all); `compiler_options`: XLA options, as in `compile_steps` ("auto": on
        CPU, XLA's own convolutions instead of YNNPACK's; None: XLA's defaults).
      log_dir: where `history.json` and `curves.png` are written after every epoch (process 0 only), and
        the TensorBoard event files (`jaxnets.train.tensorboard`: the training loss and error about twice
        a second, the gradient, parameter and update norms, every epoch's metrics);
        default `checkpoint_dir`; None and no `checkpoint_dir`: nothing is written.
      tensorboard: None (default): write TensorBoard event files into `log_dir` when tensorboardX is
        installed (`pip install 'jaxnets[tensorboard]'`), and train without them when it is not; True:
        write them (ImportError without tensorboardX, ValueError without a `log_dir`); False: never.
      on_epoch_end: called as `on_epoch_end(epoch, history)` after each epoch (1-based `epoch`), on
        every process (e.g. to print a line per epoch).
      precision: None (float32), a dtype name ("bfloat16", "float16") or a `jaxnets.train.Policy`
        (`jaxnets.train.precision`): training and validation compute in its dtype with float32 master
        parameters; float16 adds dynamic loss scaling, whose state is checkpointed with the run. A
        resume must use the same precision.

      initial_variables: weights to start from instead of the seed's initialisation, e.g.
        `models.from_torch(...)`: `{"params": ..., "batch_stats": ...}` or params only (see
        `TrainState.create(variables=...)`); they are copied, so the compiled steps' buffer donation
        leaves the caller's arrays intact. The seed still draws dropout/augmentation keys and the order.
      drop_last: True (default): the incomplete last training batch of an epoch is dropped; False: it is
        trained, padded to the full batch size with masked rows (one compiled program) and its loss
        averaged over its real rows, as torch's `DataLoader(drop_last=False)`; an epoch then has
        `data.steps_per_epoch(N, batch_size, drop_last=False)` steps, torch's `len(loader)`. Applies to
        dict `train_data` (a `Batches` brings its own).
      plateau: a `jaxnets.train.ReduceLROnPlateau` (torch's ReduceLROnPlateau), stepped after every epoch
        with the monitored metric (see Returns: `early_stopping.monitor`, else `val_loss`, else
        `train_loss`); `optimizer` must end with `plateau.transform()`. Its new rate is written into the
        optimizer state (no recompilation), recorded in `History.learning_rate`, and its counters are
        checkpointed with the run.
      checkpoint_every: None, or also save a checkpoint every `checkpoint_every` optimizer steps inside the
        epochs (needs `checkpoint_dir`; kept in `checkpoint_dir/mid_epoch`, the latest one only), with the
        data position (epoch, batch) and the epoch's metrics so far: `resume=True` continues from the
        newest checkpoint, mid-epoch or not, at that batch (a `Loader` seeks there; a `Batches` skips the
        batches before it), and the run ends bit for bit as an uninterrupted one.
      seeds, hparams: train a POPULATION (`jaxnets.train.population`): every combination of a seed in
        `seeds` (a list of distinct non-negative ints; default `[seed]`) and a grid point of `hparams` (a
        dict of hyperparameter name -> list of values; the grid is the cartesian product in the dict's
        key order; default one grid point `{}`), as one program vmapped over a leading run axis R. Member
        `r = g * len(seeds) + i` has seed `seeds[i]` and grid point `g` (`population_members`). The
        names `label_smoothing` (passed to `loss_fn`) and `dropout_rate` (the `dropout` attribute of the
        model) are applied by `fit`; every other name is a keyword of the hyperparameter dict `hp` that
        `optimizer(hp)` reads, e.g. `optimizer=lambda hp: train.optimizer("sgd",
        learning_rate=hp["learning_rate"], momentum=0.9)`. Each member has its own initialisation, batch
        order, dropout/augmentation keys, hyperparameters, optimizer state and BatchNorm statistics; a
        member whose loss turns non-finite is recorded (`History.diverged`) and frozen while the others
        train on; early stopping applies to each member. The returned `state` carries the leading
        axis R (`train.unstack(state, r)` gives member r) and every per-epoch metric of `history` one
        value per member. With neither `seeds` nor `hparams`, `fit` trains one run exactly as before.
      population: how a population runs: "vmap" (one compiled program over all members), "sequential"
        (the members one after another at every step, each with the same program compiled for a run axis
        of one; the same results up to float32 reduction order), or "auto" (default): "sequential" on CPU,
        where it is measured faster (benchmarks/README.md, "Populations"), "vmap" on GPU and TPU
        (`train.population.AUTO_MODE`).

    Returns: `(state, history)`. `state` holds one copy of every array (pmap's device axis removed).
      Without early stopping it is the state after the last epoch. With early stopping it is the
      whole state (params, batch_stats, opt_state, step) at the end of the BEST epoch,
      `history.best_epoch`; `history` still lists every epoch run.
      The "best" epoch (kept as a checkpoint, marked in the plots) is the one with the lowest
      `early_stopping.monitor` (improvement by more than its `min_delta`), else the lowest
      validation loss, else the lowest training loss.

    Raises:
      CheckpointError: `resume=True` and no saved epoch is intact (every one fails its checksums or is
        incomplete); a damaged newer epoch with an intact older one is skipped with a warning instead.
      NonFiniteLossError: a training step's loss is nan or inf (or the parameters are after an
        epoch). The message names the step; the last good checkpoint (if any) is left untouched, and
        `history.json` and the error's `history` attribute hold the completed epochs. For a population,
        only when EVERY member has diverged.
      ValueError / TypeError: bad arguments, named in the message (e.g. a batch size larger than the
        training set, an early-stopping monitor on validation data without `val_data`, existing
        checkpoints without `resume=True`, a checkpoint from a run with another seed or batch size); a
        TypeError for a model with BatchNorm whose `__call__` takes no `mask` keyword when its training
        batches must be padded (a batch size that does not divide over the devices).

    Multi-process runs (`jaxnets.train.distributed`): call `fit` on every process with the same
    arguments; each process loads its rows of every batch, the metrics are global, orbax
    coordinates the checkpoint writes, and only process 0 shows progress and writes the logs.

    PyTorch: the usual `for epoch: for x, y in loader: ...` loop with `torch.save` checkpoints.
    """
    fn = "fit"
    if seeds is not None or hparams is not None:
        from jaxnets.train.population import fit_population  # population.py builds on this module's helpers

        if tensorboard is not None and check_bool(fn, "tensorboard", tensorboard):
            raise ValueError(f"{fn}: tensorboard=True is not supported for a population (seeds=/hparams=); its "
                             f"history.json and curves.png hold every member. Pass tensorboard=None or False.")

        return fit_population(
            model, train_data, seeds=seeds, hparams=hparams, population=population, val_data=val_data,
            epochs=epochs, batch_size=batch_size, optimizer=optimizer, seed=seed, loss_fn=loss_fn, augment=augment,
            preprocess=preprocess, learning_rate=learning_rate, early_stopping=early_stopping,
            checkpoint_dir=checkpoint_dir, keep=keep, resume=resume, progress=progress, parallel=parallel,
            devices=devices, log_dir=log_dir, on_epoch_end=on_epoch_end, precision=precision,
            compiler_options=compiler_options, initial_variables=initial_variables, drop_last=drop_last,
            plateau=plateau, checkpoint_every=checkpoint_every)
    if population != "auto":
        raise ValueError(f"{fn}: population={population!r} applies to a population only (pass seeds= or hparams=).")
    seed = 0 if seed is None else seed
    check_fit_arguments(fn, epochs=epochs, optimizer=optimizer, seed=seed, early_stopping=early_stopping,
                     val_data=val_data, resume=resume, checkpoint_dir=checkpoint_dir)
    check_bool(fn, "drop_last", drop_last)
    _check_checkpoint_every(fn, checkpoint_every, checkpoint_dir)
    if plateau is not None and not isinstance(plateau, ReduceLROnPlateau):
        raise TypeError(f"{fn}: plateau must be a jaxnets.train.ReduceLROnPlateau or None, got "
                        f"{type(plateau).__name__}.")
    given_batches = isinstance(train_data, Batches)
    train_data = sources_as_batches(fn, "train_data", train_data, batch_size, train=True, seed=seed,
                                    drop_last=drop_last)
    val_data = sources_as_batches(fn, "val_data", val_data, getattr(train_data, "batch_size", batch_size),
                                  train=False, seed=seed)
    check_dataset(fn, "train_data", train_data)
    if val_data is not None:
        check_dataset(fn, "val_data", val_data)
    train_batches = as_batches(fn, "train_data", train_data, batch_size, train=True, seed=int(seed),
                               drop_last=drop_last)
    val_batches = None if val_data is None else as_batches(fn, "val_data", val_data, train_batches.batch_size,
                                                           train=False, seed=int(seed))
    epochs, seed = int(epochs), int(seed)
    monitor = early_stopping.monitor if early_stopping else ("val_loss" if val_batches else "train_loss")
    log_dir = os.fspath(log_dir) if log_dir is not None else (
        os.fspath(checkpoint_dir) if checkpoint_dir is not None else None)
    main = is_main_process()  # process 0 writes the logs and shows progress
    write_tensorboard = check_tensorboard(fn, tensorboard, log_dir) and main
    show = progress_enabled(progress) and main
    policy = None if precision is None else as_policy(fn, precision)
    steps = cached_compile_steps(parallel, loss_fn=loss_fn, preprocess=preprocess, augment=augment, devices=devices,
                                 precision=policy, compiler_options=compiler_options)
    # What a checkpoint must agree on for a resume to continue the same run.
    run = {"seed": seed, "batch_size": train_batches.batch_size, "train_examples": train_batches.num_examples,
           "monitor": monitor}
    if policy is not None and not policy.is_float32:
        run["precision"] = str(policy)  # only then, so a float32 run resumes from checkpoints without the key
    if not drop_last and not given_batches:
        run["drop_last"] = False  # only then, so a drop_last run resumes from checkpoints without the key
    sample = sample_input(train_data, train_batches)
    check_not_channels_first(fn, model, sample.shape)
    fresh = TrainState.create(model, optimizer, sample, seed, precision=policy, variables=initial_variables)
    check_model_data(fn, fresh, "train_data", train_data, preprocess=preprocess)
    if val_data is not None:
        check_model_data(fn, fresh, "val_data", val_data, preprocess=preprocess)
    # Every training batch carries a mask (one program for all batches), unless the model has BatchNorm but
    # no `mask` keyword: its batches then get a mask only where rows are padded (and the step refuses them).
    pad_to = train_batches.batch_size if (model_takes_mask(fresh.apply_fn) or not fresh.batch_stats) else None
    best = BestMetric(early_stopping.min_delta if early_stopping else 0.0)

    checkpoints = None if checkpoint_dir is None else Checkpoints(checkpoint_dir, keep=keep)
    mid = _mid_epoch_checkpoints(checkpoint_dir, checkpoint_every)
    # Closing waits for the last checkpoint save; `logs` closes the TensorBoard file, also after an error.
    with contextlib.ExitStack() as stack:
        for store in (checkpoints, mid):
            if store is not None:
                stack.enter_context(store)
        resumed = _resume(fn, checkpoints, fresh, run, resume=resume, best=best, early_stopping=early_stopping,
                          plateau=plateau)
        state, history, start, first_batch, prior, best_state = _resume_mid_epoch(
            fn, mid, checkpoints, fresh, run, resumed, resume=resume, best=best, early_stopping=early_stopping,
            plateau=plateau)
        step, placed = int(state.step) - first_batch, steps.put_state(state)
        # A resumed run hides what an interrupted one logged past its checkpoint (TensorBoard's purge_step).
        board = (stack.enter_context(TensorBoardLog(log_dir, purge_step=int(state.step))) if write_tensorboard
                 else None)
        for epoch in range(start, epochs):
            if _patience_spent(early_stopping, best):
                break  # a resumed run that had already stopped
            history.stopped_early = False  # resumed with other (or no) early stopping: the run goes on
            started = time.perf_counter()
            bar = ProgressBar(len(train_batches), epoch=epoch + 1, epochs=epochs, enabled=show)
            on_step = _mid_epoch_saver(mid, checkpoint_every, steps, epoch=epoch, first_step=step,
                                       num_batches=len(train_batches), history=history, best=best, run=run,
                                       extra={} if plateau is None else {"plateau": plateau.state_dict()})
            placed, step = _train_and_validate(fn, steps, placed, step, epoch, train_batches=train_batches,
                                               val_batches=val_batches, pad_to=pad_to, history=history,
                                               checkpoints=checkpoints, bar=bar, first_batch=first_batch, prior=prior,
                                               on_step=on_step, tensorboard=board)
            first_batch, prior = 0, []
            rate = learning_rate_of(learning_rate, steps.get_state(placed).opt_state, step - 1)
            if plateau is not None and rate is not None:
                rate *= plateau.scale  # the epoch ran at the plateau's current rate
            improved = _record_epoch(history, best, epoch, monitor=monitor, rate=rate, started=started,
                                     early_stopping=early_stopping)
            if plateau is not None:  # torch: scheduler.step(metric) after the epoch; the next epoch uses the rate
                plateau.step(getattr(history, monitor)[-1])
                placed = placed.replace(opt_state=plateau.apply(placed.opt_state))
            if board is not None:
                board.epoch(history, step)
            if improved and early_stopping is not None:
                best_state = snapshot(steps.get_state(placed))
            _save_epoch(checkpoints, epoch, steps.get_state(placed), history=history, best=best, improved=improved,
                        run=run, log_dir=log_dir, main=main, on_epoch_end=on_epoch_end,
                        extra={} if plateau is None else {"plateau": plateau.state_dict()})
            if history.stopped_early:
                break
    final = best_state if (early_stopping is not None and best_state is not None) else steps.get_state(placed)
    return final, history
