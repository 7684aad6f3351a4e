"""Trained runs as objects: `load_run(run_dir)` rebuilds a run of `jaxnets-train` for evaluation and prediction.

    run = train.load_run("runs/lenet5-20250101-120000", epoch="best")
    logits = run.predict(images)                  # uint8 [N, 28, 28, 1] -> [N, 10]
    run.evaluate({"image": images, "label": labels})   # {"loss", "accuracy", "top5", "correct", "count"}

A run directory of the command line holds `config.json` (the flags, and from format 2 on the input shape
and number of classes), `history.json`, `curves.png` and `checkpoints/`. `load_run` rebuilds the model
from the registry and the OPTIMIZER from the same flags, exactly as the command built them (schedule
included, stepped by the checkpoint's recorded training-set size and batch size), and restores the
whole `TrainState` from the checkpoint. Rebuilding the optimizer, rather than restoring the parameters
alone into a state with a placeholder optimizer, is what lets every saved array be verified against
its checksum (`Checkpoints.restore` reads the state whole) and gives a state that can go on training
(`fit(..., initial_variables=run.state.variables)` or the optimizer in `run.state.tx`).

Runs written by `fit(checkpoint_dir=...)` from Python have no config.json: the model and optimizer are
the caller's code, so restore them with `Checkpoints(checkpoint_dir).restore(TrainState.create(model,
optimizer, sample_input, seed))`; `load_run` says so when config.json is missing.

PyTorch: `model.load_state_dict(torch.load(path)["model"]); model.eval()`, with the model rebuilt by hand.
"""
from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnets.checks import check_int, check_positive_int, is_int
from jaxnets.compile import jit
from jaxnets.data.augment import to_float
from jaxnets.layers.losses import cross_entropy
from jaxnets.train.checkpoint import CheckpointError, Checkpoints
from jaxnets.train.history import History
from jaxnets.train.population import PopulationOptimizer, population_members, population_state, unstack
from jaxnets.train.precision import as_policy
from jaxnets.train.state import TrainState

__all__ = ["Run", "load_run", "is_sweep", "EPOCHS"]

EPOCHS = ("latest", "best")  # the named epochs load_run takes besides an epoch number
_NEEDED = ("model", "seed", "batch_size", "image_shape", "num_classes")  # fields of config.json load_run reads


class Run:
    """A trained run of `jaxnets-train`, loaded by `load_run`.

    Attributes:
      run_dir: the run directory (absolute).
      config: the dict of config.json (the training flags and the run record).
      epoch: the epoch whose checkpoint was loaded.
      model: the registered model, rebuilt from the config (with `axis_name=None`, for one device).
      state: the restored `TrainState` (parameters, BatchNorm statistics, optimizer state and step of
        that epoch; `tx` is the optimizer rebuilt from the config).
      history: the `History` saved with that checkpoint (epochs 1 to `epoch`; of a sweep, the member's own).
      member: for one member of a sweep, `{"index": r, "seed": s, **hyperparameters}`; None for a single run.
      image_shape: `(H, W, C)` of the images the model takes; num_classes: the number of classes.
      forward: the compiled forward pass `predict` runs, `forward(variables, images) -> logits`
        (`jaxnets.jit`: one program per batch shape).
    """

    def __init__(self, run_dir: str, config: dict, epoch: int, model, state: TrainState, history: History,
                 member: dict | None = None):
        self.run_dir, self.config, self.epoch, self.member = run_dir, config, epoch, member
        self.model, self.state, self.history = model, state, history
        self.image_shape = tuple(int(d) for d in config["image_shape"])
        self.num_classes = int(config["num_classes"])
        precision = config.get("precision", "float32")
        policy = None if precision == "float32" else as_policy("load_run", precision)
        apply_fn = state.apply_fn

        def forward(variables, images):  # the evaluation step's forward pass (make_eval_step), logits kept
            x = to_float(images)
            if policy is not None:
                variables, x = {**variables, "params": policy.cast_to_compute(variables["params"])}, \
                    policy.cast_to_compute(x)
            logits = apply_fn(variables, x, train=False)
            return logits if policy is None else policy.cast_to_output(logits)

        self.forward = jit(forward)

    def __repr__(self) -> str:
        member = "" if self.member is None else f", member={self.member}"
        return (f"Run({self.run_dir!r}, model={self.config['model']!r}, epoch={self.epoch}{member}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")

    def predict(self, images, *, batch_size: int = 256) -> np.ndarray:
        """Logits of the model for `images`, preprocessed as in training (`data.augment.to_float`, x / 255).

        Evaluation mode (running BatchNorm statistics, no dropout), in the run's precision, compiled with
        `jaxnets.jit`. The images go through in batches of `min(batch_size, N)` rows, the last one padded
        with zero images (their logits dropped), so one program serves every batch.

        Args:
          images: uint8 `[N, H, W, C]` pixels in [0, 255] with `(H, W, C) == run.image_shape` (or floating
            images already scaled to [0, 1]).
          batch_size: images per forward pass.
        Returns: float32 logits `[N, num_classes]` (a numpy array).
        Raises:
          TypeError: `images` of an integer dtype other than uint8; `batch_size` not an int.
          ValueError: `images` not of shape `[N, *run.image_shape]`; `batch_size < 1`.
        PyTorch: `model.eval(); with torch.no_grad(): model(x)`.
        """
        fn = "Run.predict"
        batch_size = check_positive_int(fn, "batch_size", batch_size)
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"{fn}: images must have shape [N, {', '.join(map(str, self.image_shape))}] (the "
                             f"run's input, channels last), got {tuple(images.shape)}.")
        if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f"{fn}: images must be uint8 pixels in [0, 255] (or floating images in [0, 1]), got "
                            f"dtype {images.dtype}.")
        n = len(images)
        if n == 0:
            return np.zeros((0, self.num_classes), np.float32)
        rows = min(batch_size, n)
        variables = self.state.variables
        out = []
        for start in range(0, n, rows):
            chunk = images[start:start + rows]
            if len(chunk) < rows:  # pad the last batch: the same shape, no new program
                chunk = np.concatenate([chunk, np.zeros((rows - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            out.append(self.forward(variables, chunk))
        return np.concatenate([np.asarray(x) for x in jax.device_get(out)])[:n].astype(np.float32)

    def evaluate(self, data, *, batch_size: int = 256) -> dict:
        """Mean loss, accuracy and top-5 accuracy of the run on `data`, from `predict`'s logits.

        Args:
          data: `{"image": [N, H, W, C] uint8, "label": [N] integer classes}`.
          batch_size: as in `predict`.
        Returns: `{"loss": mean cross-entropy, "accuracy", "top5": the fraction whose label is among the 5
          largest logits (all of them when num_classes <= 5), "correct": int, "count": int}`.
        Raises:
          TypeError: `data` not a dict with "image" and "label".
          ValueError: labels not of shape [N], or outside [0, num_classes); and as `predict`.
        """
        fn = "Run.evaluate"
        if not isinstance(data, dict) or "image" not in data or "label" not in data:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise TypeError(f"{fn}: data must be a dict {{'image': [N, H, W, C], 'label': [N]}}, got {got}.")
        labels = np.asarray(data["label"])
        if labels.shape != (len(data["image"]),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{fn}: data['label'] must be [N] integer classes for the {len(data['image'])} images, "
                             f"got shape {labels.shape} and dtype {labels.dtype}.")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{fn}: data['label'] must be classes in [0, {self.num_classes}), got values in "
                             f"[{labels.min()}, {labels.max()}].")
        logits = self.predict(data["image"], batch_size=batch_size)
        losses = np.asarray(cross_entropy(jnp.asarray(logits), jnp.asarray(labels), reduction="none"))
        k = min(5, self.num_classes)
        top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        correct = int(np.sum(top[:, 0] == labels))
        count = len(labels)
        return {"loss": math.fsum(losses.tolist()) / max(count, 1), "accuracy": correct / max(count, 1),
                "top5": float(np.mean(np.any(top == labels[:, None], axis=1))) if count else 0.0,
                "correct": correct, "count": count}


def read_config_file(fn: str, path: str) -> dict:
    """The JSON object in a run's config.json at `path` (the flags of `jaxnets-train`).

    Raises: ValueError naming `fn` and the file: unreadable, not JSON (or not UTF-8), not a JSON object.
    """
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise ValueError(f"{fn}: cannot read {path!r}: {' '.join(str(error).split())}.") from error
    if not isinstance(config, dict):
        raise ValueError(f"{fn}: {path!r} holds a {type(config).__name__}, not the run's flags (a dict).")
    return config


def _read_config(fn: str, run_dir: str) -> dict:
    """config.json of `run_dir`, checked to hold what `load_run` needs (format 2 or later)."""
    from jaxnets.train.cli import CONFIG_FORMAT

    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        parent = os.path.dirname(run_dir)
        hint = (f" ({run_dir!r} looks like the checkpoints/ of the run {parent!r}: pass that directory)"
                if os.path.exists(os.path.join(parent, "config.json")) else
                "; a run written by fit(checkpoint_dir=...) from Python has none: restore it with "
                "Checkpoints(checkpoint_dir).restore(TrainState.create(model, optimizer, sample_input, seed))")
        raise FileNotFoundError(f"{fn}: {path!r} is missing; load_run reads the model and its training flags from "
                                f"the config.json that jaxnets-train writes in a run directory{hint}.")
    config = read_config_file(fn, path)
    version = config.get("format")
    if version is None:
        raise ValueError(f"{fn}: {path!r} was written by an older jaxnets (it has no 'format'): it does not record "
                         f"the image_shape and num_classes that rebuild the model; add them to it (e.g. "
                         f"\"format\": {CONFIG_FORMAT}, \"image_shape\": [28, 28, 1], \"num_classes\": 10 for MNIST) "
                         f"or train the run again.")
    if not is_int(version) or version > CONFIG_FORMAT:
        raise ValueError(f"{fn}: {path!r} has format {version!r}; this jaxnets reads formats up to "
                         f"{CONFIG_FORMAT} (written by jaxnets {config.get('jaxnets_version', '?')}): upgrade jaxnets.")
    missing = [name for name in _NEEDED if config.get(name) is None]
    if missing:
        raise ValueError(f"{fn}: {path!r} lacks {', '.join(map(repr, missing))}, which load_run needs to rebuild "
                         f"the model; is it a damaged run directory?")
    return config


def _epoch(fn: str, checkpoints: Checkpoints, epoch) -> int:
    """The saved epoch `epoch` names ("latest", "best" or a number)."""
    saved = checkpoints.epochs()
    if not saved:
        raise FileNotFoundError(f"{fn}: {checkpoints.directory!r} holds no checkpoint (did the run finish an epoch?).")
    if isinstance(epoch, str):
        return checkpoints.latest() if epoch == "latest" else checkpoints.best() or checkpoints.latest()
    if epoch not in saved:
        raise FileNotFoundError(f"{fn}: no checkpoint of epoch {epoch} in {checkpoints.directory!r}; saved epochs: "
                                f"{saved} (or pass epoch='latest' or 'best').")
    return epoch


def is_sweep(config: dict) -> bool:
    """Whether a run's config.json records a sweep (`--seeds`, or a comma list for a sweepable flag)."""
    from jaxnets.train.cli import SWEEP_FLAGS

    return config.get("seeds") is not None or any(isinstance(config.get(flag), list) for flag in SWEEP_FLAGS)


def load_run(run_dir: str | os.PathLike, *, epoch: str | int = "latest", member: int | None = None) -> Run:
    """Load a run of `jaxnets-train`: its model, restored state, config and history, ready to predict.

    Args:
      run_dir: the run directory (`--out` of the training command; it holds config.json and checkpoints/).
      epoch: "latest" (the newest saved epoch), "best" (the epoch with the best monitored metric,
        validation loss by default, as `fit` ranks them; for a sweep member, that member's best epoch,
        which must be among the saved ones) or an epoch number that is saved.
      member: for a sweep (`--seeds` and/or comma lists), the member to load, `0 <= member < R` in
        `fit`'s order (grid points outer, seeds inner; `run.history.runs` of a loaded member's sweep lists
        them, as does the error for a missing `member`). None (the default) for a single run.
    Returns: a `Run` (of a sweep: member `member`'s state, `train.unstack` of the saved population, its
      optimizer built from its own hyperparameters, its own history).
    Raises:
      TypeError: `run_dir` not a str or path; `epoch` neither a str nor an int (a bool included); `member`
        not an int.
      ValueError: `epoch` an unknown name or < 1; `member` given for a single run, missing for a sweep or
        out of range; a config.json that is not JSON, is from an older jaxnets (no "format": it lacks
        image_shape and num_classes) or lacks a field; a checkpoint that does not fit the model the config
        builds (the file is named).
      FileNotFoundError: no run directory, no config.json (a run of `fit` from Python: the message says
        how to restore it), no checkpoints/ or no checkpoint of `epoch`.
      CheckpointError (a ValueError): the checkpoint of that epoch is damaged (a file corrupted, truncated
        or missing, a checksum that fails); its `.path` names the epoch directory.
    """
    from jaxnets.train.cli import CLIError, build_from_config

    fn = "load_run"
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"{fn}: run_dir must be a str or os.PathLike (a run directory), got {type(run_dir).__name__}.")
    if isinstance(epoch, str):
        if epoch not in EPOCHS:
            raise ValueError(f"{fn}: epoch must be 'latest', 'best' or an epoch number, got {epoch!r}.")
    elif not is_int(epoch):
        raise TypeError(f"{fn}: epoch must be 'latest', 'best' or an int epoch number, got {type(epoch).__name__} "
                        f"{epoch!r}.")
    elif epoch < 1:
        raise ValueError(f"{fn}: epoch must be an epoch number >= 1, got {epoch}.")
    if member is not None:
        member = check_int(fn, "member", member, minimum=0)
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{fn}: the run directory {run_dir!r} does not exist or is not a directory.")
    config = _read_config(fn, run_dir)
    config_path = os.path.join(run_dir, "config.json")
    sweep = is_sweep(config)
    if member is not None and not sweep:
        raise ValueError(f"{fn}: member={member} is for a sweep's run directory; {config_path!r} records a single "
                         f"run (load it without member=).")
    directory = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{fn}: {directory!r} is missing; the run saved no checkpoint.")
    with Checkpoints(directory, asynchronous=False, read_only=True) as checkpoints:
        if sweep:
            number, recorded, members = _sweep_epoch(fn, checkpoints, epoch, member)
        else:
            number = _epoch(fn, checkpoints, epoch if isinstance(epoch, str) else int(epoch))
            recorded = checkpoints.meta(number).get("run", {})  # verified; gives the steps per epoch
        if not {"train_examples", "batch_size"} <= set(recorded):
            raise ValueError(f"{fn}: the checkpoint {checkpoints.path(number)!r} does not record the run's "
                             f"train_examples and batch_size (written by an older jaxnets).")
        steps_per_epoch = int(recorded["train_examples"]) // int(recorded["batch_size"])
        # A sweep's swept flags are lists: the model does not depend on them, and the optimizer built here is
        # the shared one of a seeds-only sweep (a grid builds each member's in _sweep_state).
        flags = {k: v[0] if sweep and isinstance(v, list) and k != "seeds" else v for k, v in config.items()}
        try:
            model, optimizer = build_from_config(flags, image_shape=config["image_shape"],
                                                 num_classes=int(config["num_classes"]), steps_per_epoch=steps_per_epoch)
        except CLIError as error:
            raise ValueError(f"{fn}: {config_path!r}: {error}") from error
        precision = config.get("precision", "float32")
        precision = None if precision == "float32" else precision
        sample = np.zeros((1, *config["image_shape"]), np.uint8)
        if sweep:
            like = _sweep_state(config, model, optimizer, members, recorded, sample, precision, steps_per_epoch)
        else:
            like = TrainState.create(model, optimizer, sample, int(config["seed"]), precision=precision)
        try:
            state, meta = checkpoints.restore(like, number)
        except CheckpointError:
            raise
        except ValueError as error:  # the checkpoint's arrays do not fit the model the config builds
            raise ValueError(f"{fn}: the model that {config_path!r} describes ({config['model']}) does not fit its "
                             f"checkpoint: {error}") from error
    history = History.from_dict(meta["history"])
    if not sweep:
        return Run(run_dir, config, number, model, state, history)
    return Run(run_dir, config, number, model, unstack(state, member), history.member(member),
               member={"index": member, **members[member]})


def _sweep_epoch(fn: str, checkpoints: Checkpoints, epoch, member: int | None) -> tuple[int, dict, list[dict]]:
    """For a sweep's checkpoints: (the saved epoch `epoch` names for `member`, the run record of the latest
    checkpoint, the members in fit's order)."""
    latest = _epoch(fn, checkpoints, "latest")
    recorded = checkpoints.meta(latest).get("run", {})
    if "seeds" not in recorded:
        raise ValueError(f"{fn}: the checkpoint {checkpoints.path(latest)!r} does not record the sweep's seeds and "
                         f"hyperparameters (written by an older jaxnets).")
    members = population_members(recorded["seeds"], recorded.get("hparams") or None)
    if member is None or member >= len(members):
        listed = "; ".join(f"{r}: {m}" for r, m in enumerate(members))
        got = "none was given" if member is None else f"got member={member}"
        raise ValueError(f"{fn}: {os.path.dirname(checkpoints.directory)!r} holds a sweep of {len(members)} members; "
                         f"pass member=r with 0 <= r < {len(members)} ({got}). Members: {listed}.")
    if epoch == "best":
        best = History.from_dict(checkpoints.meta(latest)["history"]).best_epoch[member] or latest
        if best not in checkpoints.epochs():
            raise FileNotFoundError(f"{fn}: member {member}'s best epoch is {best}, whose checkpoint was not kept "
                                    f"(saved epochs: {checkpoints.epochs()}); pass epoch='latest' or a saved epoch.")
        return best, recorded, members
    return _epoch(fn, checkpoints, epoch), recorded, members


def _sweep_state(config: dict, model, optimizer, members: list[dict], recorded: dict, sample, precision,
                 steps_per_epoch: int) -> TrainState:
    """The structure of a sweep's saved population state, built as `jaxnets-train` built it for `fit`: the
    shared optimizer of the flags when only seeds vary, else each member's from its hyperparameters."""
    from jaxnets.train.cli import flags_of, member_optimizer

    if recorded.get("hparams"):
        optimizer = member_optimizer(flags_of(config), steps_per_epoch)
    tx = PopulationOptimizer(optimizer, members, model)
    created = {s: TrainState.create(model, optax.identity(), sample, s, precision=precision)
               for s in dict.fromkeys(m["seed"] for m in members)}
    return population_state(tx, created)
