"""The main job: `python -m jaxnets.train` (or `jaxnets-train`) trains a registered model on a dataset.

    python -m jaxnets.train                                  # LeNet-5 on the packaged MNIST sample
    python -m jaxnets.train --model resnet18 --dataset cifar10 --data-dir ~/data --download \\
        --epochs 30 --batch-size 128 --optimizer sgd --lr 0.1 --weight-decay 5e-4 --augment crop+flip
    python -m jaxnets.train --out runs/lenet5-20250101-120000 --resume      # continue a run
    python -m jaxnets.train --model resnet18 --dataset cifar10 --data-dir ~/data --precision bfloat16  # GPU/TPU
    python -m jaxnets.train --seeds 5 --lr 0.01,0.05,0.1                # a sweep: 3 learning rates x 5 seeds
    python -m jaxnets.train evaluate runs/lenet5-20250101-120000 [--epoch best] [--dataset mnist --data-dir ~/data]
    python -m jaxnets.train predict runs/lenet5-20250101-120000 digit.png another.jpg [--top-k 3]

With no flags it trains LeNet-5 on the 5,000-digit MNIST sample shipped with the package (4,500 for
training, a stratified 500 held out for validation) with SGD (momentum 0.9, lr 0.05, cosine decay per
epoch as torch's CosineAnnealingLR(T_max=10)), batch 64, 10 epochs, no augmentation, and prints the
final validation accuracy, the run directory and its files. The accuracy and time this default run
reaches are measured in the README, not here.

The run directory (`--out`, default `runs/<model>-<YYYYmmdd-HHMMSS>`) holds `config.json` (the
flags), `history.json` and `curves.png` (updated every epoch), and `checkpoints/` (orbax, verified by
checksums; the last 3 epochs and the best). `--resume` continues the run in `--out` from its latest
intact checkpoint, bit for bit as if it had not stopped (a damaged latest epoch is skipped with a
warning, see `jaxnets.train.Checkpoints.restore_latest_intact`); its flags must match `config.json`
except `--epochs` (which may grow), `--resume`, `--no-progress`, `--debug`, `--data-dir` and `--download`.

A sweep: `--seeds N` (the seeds 0..N-1) or `--seeds 0,1,2` (those seeds), and comma lists for `--lr`,
`--momentum`, `--weight-decay` and `--label-smoothing`, train the cartesian product of the lists (grid
points outer, seeds inner, in that flag order) as one population (`fit(seeds=..., hparams=...)`); a
single value is a single setting, and without `--seeds` and lists the run is the single run above. The
run ends with a table of the validation error, mean +- standard error over the seeds per grid point
(`History.summary`; at the best epoch with --patience, else the final one); config.json records the
lists and seeds; the test set of a dataset that has one is not evaluated for a sweep.

Errors print ONE line on stderr, `jaxnets-train: error: ...`, naming the flag or the file, and exit with
status 2 for bad flags or arguments (an unknown model or optimizer, a negative or non-finite learning
rate, a batch larger than the training set, `--out` naming a file) and 1 for a failure while running
(missing dataset files, an unreadable config.json, no intact checkpoint to resume from, a non-finite
loss); `--debug` adds the traceback. Warnings print one line each, `jaxnets-train: warning: ...`.
`evaluate RUN_DIR` prints the loss, accuracy and top-5 accuracy of a trained run (`jaxnets.train.load_run`)
on the test set of its dataset (mnist-sample has none: the run's held-out validation split);
`predict RUN_DIR FILE...` prints the top-k classes of image files with their probabilities. For a
sweep's run directory both take `--member R`, the member to load (the error without it lists them).
The choices of the flags come from the library: `models.available()`, `optim.OPTIMIZERS`,
`precision.DTYPES`, `parallel.MODES`; the number of classes from the labels of the dataset loaded.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import math
import os
import sys
import time
import traceback
import warnings

import numpy as np

from jaxnets import data as _data
from jaxnets.train import schedules as _schedules
from jaxnets.train.fit import EarlyStopping, History, NonFiniteLossError, evaluate, fit
from jaxnets.train.optim import OPTIMIZERS
from jaxnets.train.parallel import AXIS_NAME, MODES
from jaxnets.train.precision import DTYPES
from jaxnets.train.progress import population_postfix
from jaxnets.train.runs import load_run, read_config_file

PROG = "jaxnets-train"
# --dataset: the library's loaders ("mnist-sample" is packaged; the others read --data-dir and return
# (train, test)).
_LOADERS = {"mnist-sample": None, "mnist": _data.load_mnist, "fashion-mnist": _data.load_fashion_mnist,
            "cifar10": _data.load_cifar10, "cifar100": _data.load_cifar100}
DATASETS = tuple(_LOADERS)
SCHEDULES = ("constant", "cosine", "step", "exponential")  # built by _schedule from jaxnets.train.schedules
AUGMENTS = ("none", "crop", "flip", "crop+flip")
PRECISIONS = DTYPES
PARALLEL = ("auto", *MODES)
# Flags that may change between a run and its --resume.
_RESUMABLE = ("epochs", "resume", "no_progress", "data_dir", "download", "out", "debug")
# The sweep's flags: a comma list makes a grid (the hyperparameter names of fit's `hparams=`, in grid order).
SWEEP_FLAGS = {"lr": "learning_rate", "momentum": "momentum", "weight_decay": "weight_decay",
               "label_smoothing": "label_smoothing"}
_OPTIMIZER_FLAGS = ("lr", "momentum", "weight_decay")  # the hyperparameters that build the optimizer


class CLIError(Exception):
    """A bad flag or flag combination: reported as one line on stderr, exit status 2."""


class RunError(Exception):
    """A failure while running that the flags did not cause (an unreadable file): one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message over several lines; we want one
        raise CLIError(message)


def _finite_float(text: str) -> float:
    """argparse type: a finite float (`float` alone accepts 'nan' and 'inf')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def finite_floats(text: str) -> float | list[float]:
    """argparse type of the sweepable flags: one finite float, or a comma list of at least two distinct ones
    (a grid), e.g. `0.01,0.1`."""
    items = text.split(",")
    if len(items) == 1:
        return _finite_float(text)
    if any(not item.strip() for item in items):
        raise argparse.ArgumentTypeError(f"empty item in the list {text!r} (write values separated by commas)")
    values = [_finite_float(item) for item in items]
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise argparse.ArgumentTypeError(f"{repeated:g} appears twice in the list {text!r}")
    return values


def seed_list(text: str) -> list[int]:
    """argparse type of --seeds: `N` (an int >= 1) means the seeds 0..N-1; `a,b,c` lists distinct seeds >= 0."""
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise argparse.ArgumentTypeError(f"empty item in the list {text!r} (write seeds separated by commas)")
    try:
        values = [int(item) for item in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seeds or a comma list of seeds (ints), got "
                                         f"{text!r}") from None
    if len(values) == 1:
        if values[0] < 1:
            raise argparse.ArgumentTypeError(f"the number of seeds must be >= 1, got {values[0]}")
        return list(range(values[0]))
    negative = next((v for v in values if v < 0), None)
    if negative is not None:
        raise argparse.ArgumentTypeError(f"seeds must be >= 0, got {negative} in {text!r}")
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise argparse.ArgumentTypeError(f"seed {repeated} appears twice in the list {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `jaxnets-train` (its `--help` lists every flag and default)."""
    from jaxnets import models

    # The description is printed as is; the help strings are %-formatted (a percent sign is written %%).
    p = _Parser(prog=PROG, description="Train a jaxnets model. With no flags: LeNet-5 on the packaged "
                                       "MNIST sample, SGD with momentum, 10 epochs (the README gives the measured accuracy).",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="mnist-sample", choices=DATASETS,
                      help="dataset; mnist-sample is shipped with the package, the others are read from --data-dir")
    data.add_argument("--data-dir", default=None, help="root directory of the datasets (e.g. DIR/mnist/...)")
    data.add_argument("--download", action="store_true", help="download missing dataset files into --data-dir")
    data.add_argument("--val-fraction", type=_finite_float, default=0.1,
                      help="fraction of the training set held out for validation (stratified, fixed split seed 0)")
    data.add_argument("--subset", type=int, default=None, metavar="N",
                      help="use a stratified subset of about N examples of the training set (quick runs, tests)")
    data.add_argument("--augment", default="none", choices=AUGMENTS,
                      help="on-device augmentation: random crop (padding 4 for >= 32 px images, else 2) and/or "
                           "horizontal flip")
    model = p.add_argument_group("model and optimisation")
    model.add_argument("--model", default="lenet5", choices=models.available(), help="registered model name")
    model.add_argument("--epochs", type=int, default=10)
    model.add_argument("--batch-size", type=int, default=64)
    model.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS)
    model.add_argument("--lr", type=finite_floats, default=None,
                       help="(peak) learning rate; default 0.05 for sgd, 1e-3 for the others; a comma list "
                            "(0.01,0.1) sweeps it")
    model.add_argument("--momentum", type=finite_floats, default=None,
                       help="momentum of sgd (default 0.9 here; torch's is 0) and rmsprop (default 0); a comma "
                            "list sweeps it")
    model.add_argument("--weight-decay", type=finite_floats, default=None,
                       help="coupled L2 (decoupled for adamw); default 0 (adamw: 1e-2, as torch); a comma list "
                            "sweeps it")
    model.add_argument("--label-smoothing", type=finite_floats, default=None,
                       help="label smoothing of the cross-entropy loss, in [0, 1] (default 0, none); a comma "
                            "list sweeps it")
    model.add_argument("--schedule", default="cosine", choices=SCHEDULES,
                       help="learning-rate schedule, stepped per epoch as torch's schedulers: constant, cosine "
                            "(CosineAnnealingLR, T_max = epochs), step (StepLR), exponential (ExponentialLR)")
    model.add_argument("--step-size", type=int, default=None,
                       help="epochs between decays of --schedule step (default: epochs // 3, at least 1)")
    model.add_argument("--gamma", type=_finite_float, default=None,
                       help="decay factor of --schedule step (default 0.1) or exponential (default 0.9)")
    model.add_argument("--patience", type=int, default=None,
                       help="early stopping on the validation loss after this many epochs without improvement")
    model.add_argument("--seed", type=int, default=0, help="seed of initialisation, batch order and dropout")
    model.add_argument("--seeds", type=seed_list, default=None, metavar="N|S,S,...",
                       help="a sweep over seeds: N trains the seeds 0..N-1, a comma list those seeds (with any "
                            "comma lists of --lr, --momentum, --weight-decay, --label-smoothing: every "
                            "combination, as one population)")
    run = p.add_argument_group("run")
    run.add_argument("--precision", default="float32", choices=PRECISIONS,
                     help="compute dtype of the training and evaluation steps; parameters stay float32 "
                          "(float16 adds dynamic loss scaling; jaxnets.train.precision)")
    run.add_argument("--parallel", default="auto", choices=PARALLEL,
                     help="data-parallel mode (auto: sharded over all devices if more than one, else none)")
    run.add_argument("--devices", type=int, default=None, metavar="N", help="use the first N devices")
    run.add_argument("--out", default=None, help="run directory (default runs/<model>-<timestamp>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    run.add_argument("--keep", type=int, default=3, help="number of recent checkpoints kept (plus the best)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch instead)")
    run.add_argument("--debug", action="store_true", help="print the traceback of an error after its one-line message")
    return p


# --lr's default per optimizer: 0.05 for SGD (the main job's recipe), torch.optim's defaults where they differ
# from 1e-3 (Adagrad 1e-2, Adadelta 1.0, Adamax and NAdam 2e-3), 1e-3 for the rest.
_DEFAULT_LR = {"sgd": 0.05, "adagrad": 1e-2, "adadelta": 1.0, "adamax": 2e-3, "nadam": 2e-3}


def _check(args: argparse.Namespace) -> None:
    """Range checks argparse cannot express (each failure is one CLIError line naming the flag); fills
    in the optimizer-dependent default of --lr."""
    def positive(flag: str, value, *, zero: bool = False):
        for item in value if isinstance(value, list) else [value]:  # a comma list: every value
            if item is not None and (item < 0 or (item == 0 and not zero)):
                raise CLIError(f"{flag} must be {'>= 0' if zero else '> 0'}, got {item}")

    if args.lr is None:
        args.lr = _DEFAULT_LR.get(args.optimizer, 1e-3)
    positive("--epochs", args.epochs)
    positive("--batch-size", args.batch_size)
    positive("--lr", args.lr, zero=True)
    positive("--momentum", args.momentum, zero=True)
    positive("--weight-decay", args.weight_decay, zero=True)
    positive("--subset", args.subset)
    positive("--step-size", args.step_size)
    positive("--gamma", args.gamma)
    positive("--patience", args.patience)
    positive("--devices", args.devices)
    positive("--keep", args.keep)
    if not 0.0 < args.val_fraction < 1.0:
        raise CLIError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0, got {args.seed}")
    _check_sweep(args)
    if args.momentum is not None and args.optimizer not in ("sgd", "rmsprop"):
        raise CLIError(f"--momentum applies to sgd and rmsprop, not to --optimizer {args.optimizer}")
    if args.step_size is not None and args.schedule != "step":
        raise CLIError(f"--step-size applies to --schedule step, not {args.schedule}")
    if args.gamma is not None and args.schedule not in ("step", "exponential"):
        raise CLIError(f"--gamma applies to --schedule step or exponential, not {args.schedule}")
    if args.dataset != "mnist-sample" and args.data_dir is None:
        raise CLIError(f"--dataset {args.dataset} needs --data-dir (and --download to fetch missing files)")
    if args.resume and args.out is None:
        raise CLIError("--resume needs --out, the run directory to continue")
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CLIError(f"--out {args.out!r} is an existing file; --out names the run directory (a new one, or with "
                       f"--resume the run to continue)")


def _check_sweep(args: argparse.Namespace) -> None:
    """The sweep's flags: --label-smoothing in [0, 1]; --seed is a single run's (--seeds lists a sweep's)."""
    smoothing = args.label_smoothing
    for value in smoothing if isinstance(smoothing, list) else [smoothing]:
        if value is not None and not 0.0 <= value <= 1.0:
            raise CLIError(f"--label-smoothing must be in [0, 1], got {value}")
    if args.seeds is not None and args.seed != 0:
        raise CLIError(f"--seed {args.seed} and --seeds: --seed sets a single run's seed; list the sweep's seeds "
                       f"in --seeds (e.g. --seeds {args.seed},{args.seed + 1})")


def sweep_grid(args: argparse.Namespace) -> tuple[list[int] | None, dict[str, list[float]] | None]:
    """`(seeds, hparams)` for `fit` from the parsed flags: `--seeds` as a list (None without it), and a dict
    of the flags given as comma lists, by their hyperparameter names in the order of `SWEEP_FLAGS` (None
    when there is none). Both None: a single run."""
    hparams = {name: getattr(args, flag) for flag, name in SWEEP_FLAGS.items() if isinstance(getattr(args, flag), list)}
    return args.seeds, hparams or None


def member_optimizer(args: argparse.Namespace, steps_per_epoch: int):
    """fit's `optimizer=` for a sweep: `hp -> GradientTransformation`, the single run's optimizer and
    schedule (`--optimizer`, `--schedule`) built with the member's `learning_rate`, `momentum` and
    `weight_decay` from `hp` in place of the flags' values (other names in `hp`, e.g. label_smoothing, go
    to the loss, not here)."""
    def build(hp):
        member = argparse.Namespace(**vars(args))
        for flag in _OPTIMIZER_FLAGS:
            if SWEEP_FLAGS[flag] in hp:
                setattr(member, flag, hp[SWEEP_FLAGS[flag]])
        return _optimizer(member, _schedule(member, steps_per_epoch))

    return build


def _fit_options(args: argparse.Namespace, tx, learning_rate, steps_per_epoch: int) -> dict:
    """fit's keywords that a sweep changes: `optimizer` (`tx`, or `member_optimizer` for a grid),
    `learning_rate` (to record in the history: the caller passes None when --lr is swept, so that fit reads
    each member's), `loss_fn` (a single --label-smoothing), `seed`, and for a sweep `seeds` and `hparams`."""
    from jaxnets.layers.losses import cross_entropy

    options = {"optimizer": tx, "learning_rate": learning_rate, "seed": args.seed}
    if isinstance(args.label_smoothing, float):
        options["loss_fn"] = functools.partial(cross_entropy, label_smoothing=args.label_smoothing)
    seeds, hparams = sweep_grid(args)
    if seeds is None and hparams is None:
        return options
    options.update(seeds=seeds, hparams=hparams)
    if seeds is not None:
        del options["seed"]  # the population's seeds replace the single run's
    if hparams is not None:
        options["optimizer"] = member_optimizer(args, steps_per_epoch)
    return options


def _load(args: argparse.Namespace) -> tuple[dict, dict, dict | None, int]:
    """(train, validation, test or None, number of classes) for the flags: a stratified --val-fraction of
    the training set is held out (split seed 0, whatever --seed is, so runs with different seeds share a
    validation set). The number of classes is read from the labels of the whole training set loaded."""
    test = None
    if args.dataset == "mnist-sample":
        full = _data.mnist_sample()
    else:
        full, test = _LOADERS[args.dataset](args.data_dir, download=args.download)
    num_classes = int(full["label"].max()) + 1  # labels are 0..K-1 and a full training set holds every class
    n = len(full["label"])
    if args.subset is not None and args.subset < n:
        _, full = _data.split(full, args.subset / n, seed=0)
        if test is not None:
            _, test = _data.split(test, min(1.0, args.subset / len(test["label"])), seed=0)
    train, val = _data.split(full, args.val_fraction, seed=0)
    if not len(val["label"]):
        raise CLIError(f"--val-fraction {args.val_fraction} of {len(full['label'])} examples holds out no "
                       f"validation example; use a larger --val-fraction or --subset")
    return train, val, test, num_classes


def _model(args: argparse.Namespace, image_shape: tuple, num_classes: int, axis_name):
    """The registered model for the dataset: variant "mnist" for 28x28 grey images when the model has it
    (lenet5, mlp), else "cifar" (the small-image variant of the other families)."""
    from jaxnets import models

    variants = ("mnist", "cifar") if image_shape[:2] == (28, 28) else ("cifar",)
    errors = []
    for variant in variants:
        try:
            return models.create(args.model, num_classes=num_classes, variant=variant, axis_name=axis_name)
        except ValueError as error:
            errors.append(str(error))
    raise CLIError(f"--model {args.model} cannot be built for --dataset {args.dataset} "
                   f"({image_shape[0]}x{image_shape[1]}x{image_shape[2]} images): {errors[-1]}")


def _schedule(args: argparse.Namespace, steps_per_epoch: int):
    if args.schedule == "constant":
        return args.lr
    if args.schedule == "cosine":
        return _schedules.cosine(args.lr, args.epochs, steps_per_epoch=steps_per_epoch)
    if args.schedule == "step":
        step_size = args.step_size or max(1, args.epochs // 3)
        gamma = 0.1 if args.gamma is None else args.gamma
        return _schedules.step_decay(args.lr, step_size, gamma=gamma, steps_per_epoch=steps_per_epoch)
    gamma = 0.9 if args.gamma is None else args.gamma
    return _schedules.exponential(args.lr, gamma, steps_per_epoch=steps_per_epoch)


def _optimizer(args: argparse.Namespace, learning_rate):
    from jaxnets.train.optim import optimizer

    options = {}
    if args.optimizer == "sgd":
        options["momentum"] = 0.9 if args.momentum is None else args.momentum
    elif args.optimizer == "rmsprop" and args.momentum is not None:
        options["momentum"] = args.momentum
    if args.weight_decay is not None:
        options["weight_decay"] = args.weight_decay
    return optimizer(args.optimizer, learning_rate=learning_rate, **options)


def _augment(args: argparse.Namespace, image_shape: tuple):
    if args.augment == "none":
        return None
    from jaxnets.data import augment

    fns = []
    if "crop" in args.augment:
        fns.append(functools.partial(augment.random_crop, padding=4 if min(image_shape[:2]) >= 32 else 2))
    if "flip" in args.augment:
        fns.append(augment.random_flip)
    return augment.compose(*fns)


# The format of config.json: 2 adds "format", "jaxnets_version", "image_shape" and "num_classes" (what
# `jaxnets.train.load_run` needs to rebuild the model); a file without "format" is format 1.
CONFIG_FORMAT = 2


def _config(args: argparse.Namespace, out: str, *, image_shape: tuple = (), num_classes: int | None = None) -> None:
    """Write `out/config.json`, or on --resume check that the flags match it."""
    path = os.path.join(out, "config.json")
    config = {k: v for k, v in sorted(vars(args).items()) if k not in _RESUMABLE}
    # A single run's config.json stays as before: the sweep-only flags are written only when given.
    written = {k: v for k, v in config.items() if not (k in ("seeds", "label_smoothing") and v is None)}
    if args.resume:
        if not os.path.isdir(os.path.join(out, "checkpoints")):
            raise CLIError(f"--resume: {out!r} holds no checkpoints/ directory; is it a run directory?")
        if os.path.exists(path):
            try:
                saved = read_config_file("--resume", path)
            except ValueError as error:
                raise RunError(str(error).rstrip(".")) from error
            saved = {k: v for k, v in saved.items() if k not in _RESUMABLE}
            changed = {k: (saved.get(k), v) for k, v in config.items() if saved.get(k) != v}
            if changed:
                flags = ", ".join(f"--{k.replace('_', '-')} {v[0]} (now {v[1]})" for k, v in changed.items())
                raise CLIError(f"--resume: the run in {out!r} was started with {flags}; pass the same flags")
        return
    if os.path.isdir(os.path.join(out, "checkpoints")):
        raise CLIError(f"--out {out!r} already holds a run; pass --resume to continue it or choose another --out")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({**written, "epochs": args.epochs, **_run_record(image_shape, num_classes)}, f, indent=1)
        f.write("\n")


def _run_record(image_shape: tuple, num_classes: int | None) -> dict:
    """The fields of config.json that are not flags: its format, the jaxnets version that wrote it, and the
    input shape and number of classes of the dataset, which `load_run` rebuilds the model from."""
    import jaxnets

    return {"format": CONFIG_FORMAT, "jaxnets_version": jaxnets.__version__,
            "image_shape": [int(d) for d in image_shape], "num_classes": num_classes}


def flags_of(config: dict) -> argparse.Namespace:
    """The training flags recorded in a config.json, the defaults of `build_parser` for any it lacks."""
    args = build_parser().parse_args([])
    for name, value in config.items():
        setattr(args, name, value)
    return args


def build_from_config(config: dict, *, image_shape: tuple, num_classes: int, steps_per_epoch: int,
                      axis_name=None) -> tuple:
    """The model and optimizer the training command builds for the flags recorded in a run's config.json.

    Args:
      config: the dict of config.json (flags missing from it, e.g. ones added in a later jaxnets, take
        their defaults).
      image_shape: `[H, W, C]` of the dataset's images; num_classes: the number of classes.
      steps_per_epoch: optimizer steps per epoch (training examples // batch size), which the
        learning-rate schedule is stepped by.
      axis_name: the BatchNorm axis of the model (None outside `shard_map`/`pmap`).
    Returns: `(model, optimizer)`, as `jaxnets-train` built them for the run.
    Raises: CLIError for flags that do not build (an unknown model or optimizer).
    """
    args = flags_of(config)
    if args.lr is None:
        args.lr = _DEFAULT_LR.get(args.optimizer, 1e-3)
    model = _model(args, tuple(image_shape), num_classes, axis_name)
    return model, _optimizer(args, _schedule(args, steps_per_epoch))


def _epoch_line(epochs: int, epoch: int, history: History) -> str:
    line = (f"epoch {epoch}/{epochs}: train loss {history.train_loss[-1]:.4f}, "
            f"error {100 * history.train_error[-1]:.2f}%")
    if history.val_loss:
        line += f" | val loss {history.val_loss[-1]:.4f}, error {100 * history.val_error[-1]:.2f}%"
    if history.learning_rate:
        line += f" | lr {history.learning_rate[-1]:.3g}"
    return line + f" | {history.images_per_sec[-1]:.0f} img/s | {history.wall_time[-1]:.1f} s"


def sweep_epoch_line(epochs: int, epoch: int, history: History) -> str:
    """A sweep's line per epoch (without the progress bar): the best, median and worst member by training
    loss (with its accuracy) and by validation loss, the summed throughput and the time."""
    line = (f"epoch {epoch}/{epochs}: train "
            f"{population_postfix(history.train_loss[-1], [1.0 - e for e in history.train_error[-1]])}")
    if history.val_loss:
        line += f" | val {population_postfix(history.val_loss[-1], [1.0 - e for e in history.val_error[-1]])}"
    return line + f" | {history.images_per_sec[-1]:.0f} img/s | {history.wall_time[-1]:.1f} s"


def sweep_report(history: History, args: argparse.Namespace, seconds: float) -> str:
    """The text a sweep ends with: its size and time, then `History.summary`'s table of the validation error
    (at the best epoch with --patience, as the state fit returns, else at the final epoch)."""
    summary = history.summary(metric="val_error", at="best" if args.patience is not None else "final")
    members, points = len(history.runs), len(summary)
    return (f"sweep of {members} members ({points} grid point{'s' if points != 1 else ''} x "
            f"{members // points} seed{'s' if members // points != 1 else ''}); {seconds:.1f} s\n{summary}")


def _run(args: argparse.Namespace) -> int:
    import jax

    from jaxnets.train.distributed import is_main_process
    from jaxnets.train.progress import progress_enabled

    _check(args)
    out = args.out or os.path.join("runs", f"{args.model}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    train, val, test, num_classes = _load(args)
    n_train = len(train["label"])
    if args.batch_size > n_train:
        raise CLIError(f"--batch-size {args.batch_size} is larger than the {n_train} training examples of "
                       f"--dataset {args.dataset}" + (f" --subset {args.subset}" if args.subset else ""))
    devices = None
    if args.devices is not None:
        available = jax.devices()
        if args.devices > len(available):
            raise CLIError(f"--devices {args.devices}: only {len(available)} device(s) are visible")
        devices = available[:args.devices]
    if main := is_main_process():
        _config(args, out, image_shape=train["image"].shape[1:], num_classes=num_classes)
    image_shape = tuple(train["image"].shape[1:])
    axis_name = AXIS_NAME if args.parallel in ("shard_map", "pmap") else None
    model = _model(args, image_shape, num_classes, axis_name)
    steps_per_epoch = n_train // args.batch_size
    learning_rate = None if isinstance(args.lr, list) else _schedule(args, steps_per_epoch)
    tx = None if sweep_grid(args)[1] is not None else _optimizer(args, learning_rate)  # a grid: one per member
    show_bar = progress_enabled(not args.no_progress)

    def report(epoch: int, history: History) -> None:
        if main and not show_bar:
            line = sweep_epoch_line if history.runs is not None else _epoch_line
            print(line(args.epochs, epoch, history), flush=True)

    started = time.perf_counter()
    try:
        state, history = fit(
            model, train, val_data=val, epochs=args.epochs, batch_size=args.batch_size,
            **_fit_options(args, tx, learning_rate, steps_per_epoch), augment=_augment(args, image_shape),
            early_stopping=None if args.patience is None else EarlyStopping("val_loss", patience=args.patience),
            checkpoint_dir=os.path.join(out, "checkpoints"), keep=args.keep, resume=args.resume,
            progress=not args.no_progress, parallel=args.parallel, devices=devices, log_dir=out,
            on_epoch_end=report, precision=None if args.precision == "float32" else args.precision)
    except KeyboardInterrupt:
        if main:
            print(f"{PROG}: interrupted; continue with: {PROG} --out {out} --resume (and the same flags)",
                  file=sys.stderr)
        return 130
    seconds = time.perf_counter() - started
    if not main:
        return 0
    if history.runs is not None:  # a sweep: the table; its members are not evaluated on the test set here
        print(sweep_report(history, args, seconds))
        _print_run_directory(out)
        return 0
    n_val = len(val["label"])
    if history.best_epoch is not None and args.patience is not None:
        which = f"epoch {history.best_epoch}, the best ({'early stop' if history.stopped_early else 'all epochs run'})"
        error = history.val_error[history.best_epoch - 1]
    else:
        which, error = f"epoch {len(history)}", history.val_error[-1]
    correct = int(round((1.0 - error) * n_val))
    print(f"final validation accuracy: {100 * (1.0 - error):.2f}% ({correct}/{n_val} held-out examples of "
          f"{args.dataset}; {which}); {seconds:.1f} s")
    if test is not None:
        result = evaluate(state, test, batch_size=max(args.batch_size, 256),
                          precision=None if args.precision == "float32" else args.precision)
        print(f"test accuracy: {100 * result['accuracy']:.2f}% ({result['correct']}/{result['count']})")
    _print_run_directory(out)
    return 0


def _print_run_directory(out: str) -> None:
    print(f"run directory: {os.path.abspath(out)}")
    for name in sorted(os.listdir(out)):
        full = os.path.join(out, name)
        if os.path.isdir(full):
            epochs = sorted(int(e) for e in os.listdir(full) if e.isdigit())
            print(f"  {name}/  (epochs {', '.join(map(str, epochs))})" if epochs else f"  {name}/")
        else:
            print(f"  {name}  ({os.path.getsize(full)} bytes)")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the command line: one line, no source line."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def _error(error: BaseException, debug: bool, *, unexpected: bool = False) -> None:
    if debug:
        traceback.print_exception(error)
    what = f"{type(error).__name__}: {_one_line(error)}" if unexpected else _one_line(error)
    hint = " (run with --debug for the traceback)" if unexpected and not debug else ""
    print(f"{PROG}: error: {what}{hint}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Subcommands on a trained run: evaluate, predict (jaxnets.train.load_run)
# ----------------------------------------------------------------------------------------------
SUBCOMMANDS = ("evaluate", "predict")


def _epoch_flag(text: str) -> str | int:
    """argparse type of --epoch: "latest", "best" or an epoch number >= 1."""
    if text in ("latest", "best"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'latest', 'best' or an epoch number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an epoch number >= 1, got {value}")
    return value


def _run_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The flags every subcommand on a run shares: RUN_DIR, --epoch, --member, --batch-size, --debug."""
    p = _Parser(prog=f"{PROG} {name}", description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (--out of the training command)")
    p.add_argument("--epoch", type=_epoch_flag, default="latest", help="checkpoint to load: latest, best or a number")
    p.add_argument("--member", type=int, default=None, metavar="R",
                   help="for a sweep's run directory: the member to load (0-based, grid points outer, seeds inner)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error after its one-line message")
    return p


def build_evaluate_parser() -> argparse.ArgumentParser:
    """The argument parser of `jaxnets-train evaluate RUN_DIR`."""
    p = _run_parser("evaluate", "Evaluate a trained run: loss, accuracy and top-5 accuracy on the test set of its "
                                "dataset (or of --dataset), or, for a dataset without a test set (mnist-sample), on the "
                                "run's held-out validation split. The run's --subset and --val-fraction apply, as in "
                                "training.")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="dataset to evaluate on (default: the run's)")
    p.add_argument("--data-dir", default=None, help="root directory of the datasets (e.g. DIR/mnist/...)")
    p.add_argument("--download", action="store_true", help="download missing dataset files into --data-dir")
    return p


def build_predict_parser() -> argparse.ArgumentParser:
    """The argument parser of `jaxnets-train predict RUN_DIR FILE...`."""
    p = _run_parser("predict", "Print the top-k classes of image files (decoded with Pillow, converted to the run's "
                               "channels and resized to its image size) with their softmax probabilities.")
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (PNG, JPEG, ... anything Pillow reads)")
    p.add_argument("--top-k", type=int, default=5, help="classes printed per file")
    return p


def _read_image(path: str, shape: tuple) -> tuple:
    """(uint8 [H, W, C] pixels of the file for a model taking `shape`, the file's size if it was resized)."""
    from PIL import Image

    height, width, channels = shape
    if channels not in (1, 3):
        raise RunError(f"predict: the run takes {channels}-channel images; image files give 1 (grey) or 3 (RGB)")
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            size = image.size
            if size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, np.uint8)
    except OSError as error:  # missing file, not an image (PIL.UnidentifiedImageError), truncated data
        raise RunError(f"predict: cannot read the image {path!r}: {_one_line(error)}") from error
    return pixels.reshape(height, width, channels), (None if size == (width, height) else size)


def _evaluate_command(args: argparse.Namespace) -> int:

    _positive_flag("--batch-size", args.batch_size)
    run = load_run(args.run_dir, epoch=args.epoch, member=args.member)
    flags = flags_of(run.config)
    flags.dataset = args.dataset or run.config["dataset"]
    flags.data_dir, flags.download = args.data_dir, args.download
    if flags.dataset != "mnist-sample" and flags.data_dir is None:
        raise CLIError(f"--dataset {flags.dataset} needs --data-dir (and --download to fetch missing files)")
    _, val, test, _ = _load(flags)
    split, data = ("test set", test) if test is not None else ("held-out validation split", val)
    result = run.evaluate(data, batch_size=args.batch_size)
    print(f"{run.run_dir}, epoch {run.epoch}, on the {split} of {flags.dataset} ({result['count']} images): "
          f"loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}% ({result['correct']}/{result['count']}), "
          f"top-5 {100 * result['top5']:.2f}%")
    return 0


def _predict_command(args: argparse.Namespace) -> int:

    _positive_flag("--batch-size", args.batch_size)
    _positive_flag("--top-k", args.top_k)
    run = load_run(args.run_dir, epoch=args.epoch, member=args.member)
    images = []
    for path in args.files:
        pixels, size = _read_image(path, run.image_shape)
        if size is not None:
            warnings.warn(f"predict: {path} is {size[0]}x{size[1]}; resized to the run's {run.image_shape[1]}x"
                          f"{run.image_shape[0]}")
        images.append(pixels)
    logits = run.predict(np.stack(images), batch_size=args.batch_size)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(args.top_k, run.num_classes)
    for path, p in zip(args.files, probs):
        top = np.argsort(-p, kind="stable")[:k]
        print(f"{path}: " + ", ".join(f"{c} ({100 * p[c]:.1f}%)" for c in top))
    return 0


def _positive_flag(flag: str, value) -> None:
    """CLIError unless the flag's value is > 0 (a range check argparse cannot express)."""
    if value <= 0:
        raise CLIError(f"{flag} must be > 0, got {value}")


def _guarded(run, args: argparse.Namespace) -> int:
    """`run(args)` with the command line's error handling: one-line errors (exit 2 for flags, 1 for failures
    while running), one-line warnings, orbax's absl log quiet unless --debug."""
    absl = logging.getLogger("absl")  # orbax logs through absl, e.g. a line about every damaged epoch directory
    level = absl.level
    if not args.debug:
        absl.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return run(args)
        except CLIError as error:
            _error(error, args.debug)
            return 2
        except (RunError, NonFiniteLossError, ValueError, OSError, ConnectionError) as error:  # incl. CheckpointError
            _error(error, args.debug)
            return 1
        except Exception as error:  # a bug: say what it is, and how to see where
            _error(error, args.debug, unexpected=True)
            return 1
        finally:
            absl.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 1 failure while running, 2 bad flags or
    arguments, 130 interrupted). Errors are printed as one line on stderr, with the traceback only under
    --debug; warnings as one line each.

    A first argument `evaluate` or `predict` runs that subcommand on a trained run (`jaxnets-train evaluate
    RUN_DIR`, `jaxnets-train predict RUN_DIR FILE...`); anything else trains, with the flags of `build_parser`.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    parser = {None: build_parser, "evaluate": build_evaluate_parser, "predict": build_predict_parser}[command]()
    try:
        args = parser.parse_args(argv if command is None else argv[1:])
    except CLIError as error:
        print(f"{PROG}: error: {_one_line(error)} (see {parser.prog} --help)", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    return _guarded({None: _run, "evaluate": _evaluate_command, "predict": _predict_command}[command], args)
