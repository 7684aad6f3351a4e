"""Evaluation: `evaluate` (mean loss and accuracy over a dataset), test-time augmentation and ensembles.

`evaluate` runs the compiled evaluation step (`compile_steps`) over every example, the last short
batch padded with masked rows; `tta_predict` and `ensemble_predict` average softmax outputs over
transforms of the input or over models.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import check_positive_int
from jaxnets.checks import concrete_or_none
from jaxnets.compile import jit
from jaxnets.data.augment import to_float
from jaxnets.data.batches import Batches
from jaxnets.data.pipeline import Loader, is_source
from jaxnets.data.validation import check_dataset
from jaxnets.layers.losses import cross_entropy
from jaxnets.train.compile_cache import cached_compile_steps
from jaxnets.train.parallel import CompiledSteps
from jaxnets.train.precision import as_policy
from jaxnets.train.state import TrainState

__all__ = ["evaluate", "tta_predict", "ensemble_predict", "as_batches", "sources_as_batches", "with_mask",
           "metric_sums", "eval_sums", "check_model_data"]


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------
def as_batches(fn: str, name: str, data, batch_size: int | None, *, train: bool, seed: int,
               drop_last: bool = True) -> Batches:
    """`data` as a `Batches` (`fn`, `name`: for messages): a dict becomes `Batches(data, batch_size)`
    (training: shuffled by `seed`, the incomplete last batch dropped, or with `drop_last=False` kept and
    padded to the full size with masked rows, as torch's DataLoader keeps it; validation: stored order,
    every example); a source (`jaxnets.data.ImageFolder`, `ArraySource`, a `grain.MapDataset`, ...; see
    `jaxnets.data.is_source`) becomes a `jaxnets.data.Loader` with the same rules (its last batch, when
    kept, always padded and masked); a `Batches` or `Loader` is returned as it is."""
    if is_source(data):
        batch_size = check_positive_int(fn, "batch_size", batch_size)
        return Loader(data, batch_size, shuffle=train, seed=seed, drop_last=train and drop_last)
    if isinstance(data, Batches):
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"{fn}: batch_size={batch_size} differs from the batch_size {data.batch_size} of the "
                             f"Batches passed as {name}; pass batch_size=None (or the same value).")
        return data
    if not isinstance(data, Mapping) or "image" not in data or "label" not in data:
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise TypeError(f"{fn}: {name} must be a dict {{'image': [N, H, W, C], 'label': [N]}}, a "
                        f"jaxnets.data.Batches or a source (jaxnets.data.ImageFolder, ArraySource, a grain.MapDataset), "
                        f"got {got}.")
    batch_size = check_positive_int(fn, "batch_size", batch_size)
    n = len(data["label"])
    if train and batch_size > n:
        raise ValueError(f"{fn}: batch_size {batch_size} is larger than the {n} training examples; use a "
                         f"batch_size <= {n}.")
    if train and not drop_last:
        return Batches(data, int(batch_size), shuffle=True, seed=seed, drop_last=False, pad_last=True)
    return Batches(data, int(batch_size), shuffle=train, seed=seed, drop_last=train)


def sources_as_batches(fn: str, name: str, data, batch_size: int | None, *, train: bool, seed: int,
                       drop_last: bool = True):
    """A source becomes a `Loader` (`as_batches`), so the dataset checks read its shapes and labels; any
    other `data` (a dict, a `Batches`, or something wrong that the checks will name) is returned unchanged."""
    if not is_source(data):
        return data
    return as_batches(fn, name, data, batch_size, train=train, seed=seed, drop_last=drop_last)


def check_model_data(fn: str, state: TrainState, name: str, data, *, preprocess: Callable | None = None) -> None:
    """Check `data` against the model of `state` on the host, before anything is compiled.

    The dataset's structure, dtypes and size (`data.check_dataset`); an NCHW batch for a model
    initialised on NHWC inputs, or the reverse (`TrainState.check_input`); that the model takes the
    images at all (one abstract forward pass, `jax.eval_shape`: nothing is computed); and that every
    label is a class of the model's output `[N, num_classes]`.

    Raises: TypeError/ValueError naming `fn`, the argument `name`, what was expected and what came.
    """
    check_dataset(fn, name, data)
    arrays = data.arrays if isinstance(data, Batches) else data
    images = arrays["image"]
    shape = tuple(np.shape(images))
    state.check_input(fn, f"{name}['image']", shape)
    preprocess = to_float if preprocess is None else preprocess
    sample = jax.ShapeDtypeStruct((1,) + shape[1:], images.dtype)
    forward = functools.partial(state.apply_fn, train=False)
    try:
        logits = jax.eval_shape(lambda variables, x: forward(variables, preprocess(x)), state.variables, sample)
    except Exception as error:  # Flax's ScopeParamShapeError, a shape error of lax, ...: one clear message
        built = "" if state.input_shape is None else f" (it was initialised on inputs of shape {state.input_shape})"
        raise ValueError(f"{fn}: the model cannot take {name}['image'] of shape {shape}{built}: "
                         f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from error
    if hasattr(logits, "shape") and len(logits.shape) == 2:
        check_dataset(fn, name, data, num_classes=int(logits.shape[-1]))


def with_mask(batch: Mapping) -> dict:
    """The batch with an all-True "mask" (unless it has one), so every validation batch, the short
    last one included after padding, has the same structure and the step compiles once."""
    if "mask" in batch:
        return dict(batch)
    return {**batch, "mask": np.ones(np.shape(batch["label"])[0], bool)}


def metric_sums(host: Sequence[Mapping]) -> tuple[float, float, int]:
    """(loss sum, correct, count) over fetched per-step metric dicts, accumulated in float64 / int."""
    return (math.fsum(float(m["loss"]) for m in host), float(sum(int(m["correct"]) for m in host)),
            int(sum(int(m["count"]) for m in host)))


def eval_sums(steps: CompiledSteps, state: TrainState, batches: Batches) -> tuple[float, float, int]:
    """(loss sum, correct, count) over every example of `batches`, in evaluation mode."""
    metrics = [steps.eval(state, steps.put_batch(with_mask(batch), global_batch_size=batches.batch_size))
               for batch in batches.epoch(0)]
    return metric_sums(jax.device_get(metrics))



def evaluate(state: TrainState, data, *, batch_size: int = 256, loss_fn: Callable = cross_entropy,
             preprocess: Callable | None = None, parallel: str = "auto", precision=None,
             compiler_options="auto") -> dict[str, float | int]:
    """Mean loss and accuracy of `state` on every example of `data`, in evaluation mode.

    Args:
      state: a `TrainState` with one copy of every array (as `fit` returns).
      data: `{"image": [N, H, W, C], "label": [N]}`, a `Batches` (or `jaxnets.data.Loader`), or a source
        read through a `Loader` (`jaxnets.data.ImageFolder(test_root)`, `ArraySource`, a
        `grain.MapDataset`); every example counts once (the last, short batch is padded with masked rows).
      batch_size: examples per forward pass (for a dict or a source).
      loss_fn, preprocess, precision: as in `make_eval_step`; `parallel`, `compiler_options`: as in
        `compile_steps`.
    Returns: `{"loss": mean loss, "accuracy": correct / count, "correct": int, "count": int}`.
    PyTorch: `model.eval(); with torch.no_grad(): ...` over a DataLoader.
    """
    if not isinstance(state, TrainState):
        raise TypeError(f"evaluate: state must be a jaxnets.train.TrainState (as fit returns), got "
                        f"{type(state).__name__}; build one with TrainState.create(model, optimizer, x, seed, "
                        f"variables=...).")
    data = sources_as_batches("evaluate", "data", data, batch_size, train=False, seed=0)
    check_model_data("evaluate", state, "data", data, preprocess=preprocess)
    batches = as_batches("evaluate", "data", data, None if isinstance(data, Batches) else batch_size,
                          train=False, seed=0)
    policy = None if precision is None else as_policy("evaluate", precision)
    steps = cached_compile_steps(parallel, loss_fn=loss_fn, preprocess=preprocess, precision=policy,
                                 compiler_options=compiler_options)
    loss, correct, count = eval_sums(steps, steps.put_state(state), batches)
    return {"loss": loss / max(count, 1), "accuracy": correct / max(count, 1), "correct": int(correct),
            "count": int(count)}


# ----------------------------------------------------------------------------------------------
# test-time augmentation and ensembles
# ----------------------------------------------------------------------------------------------
def _predict_source(fn: str, predict: Callable, source, batch_size: int) -> jax.Array:
    """`predict(images [b, H, W, C]) -> [b, K]` over every example of `source` in its stored order, [N, K]
    (a `Loader` without shuffling; the padding rows of its last batch dropped)."""
    loader = as_batches(fn, "images", source, batch_size, train=False, seed=0)
    return jnp.asarray(np.concatenate([np.asarray(predict(batch["image"]))[batch["mask"]]
                                       for batch in loader.epoch(0)]))


def tta_predict(apply_fn: Callable, variables, images: jax.Array, *,
                transforms: Sequence[Callable[[jax.Array], jax.Array]], batch_size: int = 256) -> jax.Array:
    """Test-time augmentation: the mean of the softmax outputs over deterministic transforms.

    `p = (1 / T) * sum_t softmax(apply_fn(variables, t(images), train=False))`.

    Args:
      apply_fn: `apply_fn(variables, x, train=False) -> logits [N, K]` (e.g. a Flax `model.apply`).
      variables: the model variables (params and, where used, batch statistics).
      images: the batch, in whatever form `apply_fn` expects (e.g. [N, H, W, C]); or a source
        (`jaxnets.data.ImageFolder`, `ArraySource`, a `grain.MapDataset`; see `jaxnets.data.is_source`),
        whose images are read `batch_size` at a time in their stored order (single process).
      transforms: non-empty sequence of functions `images -> images`, e.g. `(lambda x: x, hflip)`.
      batch_size: images per forward pass when `images` is a source.
    Returns: probabilities [N, K], rows summing to 1. The average is compiled as one program with
      `jaxnets.jit` (jaxnets' compiler options), once per `apply_fn` and `transforms` objects and input
      shapes: pass the same transform functions again to reuse it.
    Raises:
      ValueError: empty `transforms`. TypeError: a non-callable transform.
    """
    if not transforms:
        raise ValueError("tta_predict: transforms must be a non-empty sequence of functions images -> images, "
                         "e.g. (lambda x: x, hflip).")
    for i, transform in enumerate(transforms):
        if not callable(transform):
            raise TypeError(f"tta_predict: transforms[{i}] must be a function images -> images, got "
                            f"{type(transform).__name__}.")
    transforms = tuple(transforms)
    if is_source(images):
        return _predict_source("tta_predict", lambda x: tta_predict(apply_fn, variables, x, transforms=transforms),
                               images, batch_size)
    return _compiled(_tta_average, apply_fn, transforms)(apply_fn, transforms, variables, images)


def _tta_average(apply_fn, transforms, variables, images):
    probs = [jax.nn.softmax(apply_fn(variables, transform(images), train=False), axis=-1) for transform in transforms]
    return jnp.mean(jnp.stack(probs), axis=0)


def _ensemble_average(apply_fns, variables, images, weights):
    probs = jnp.stack([jax.nn.softmax(apply_fn(v, images, train=False), axis=-1)
                       for apply_fn, v in zip(apply_fns, variables)])
    weights = jnp.asarray(weights, probs.dtype)
    weights = weights / jnp.sum(weights)
    return jnp.tensordot(weights, probs, axes=1)


# The programs of tta_predict and ensemble_predict: {(function, the user's functions): jaxnets.jit of it}.
_PROGRAMS: dict = {}
_MAX_PROGRAMS = 32  # each entry keeps the user's functions and their compiled programs alive


def _compiled(fn: Callable, *static) -> Callable:
    """`fn` compiled by `jaxnets.jit` with its leading `len(static)` arguments (the user's functions) static,
    cached on their identity so repeated calls with the same model and transforms compile once; `fn`
    itself, run op by op as before, when they cannot be hashed (a callable object without `__hash__`)."""
    key = (fn, static)
    try:
        hash(key)
    except TypeError:
        return fn
    if key not in _PROGRAMS:
        if len(_PROGRAMS) >= _MAX_PROGRAMS:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))  # the oldest
        _PROGRAMS[key] = jit(fn, static_argnums=tuple(range(len(static))))
    return _PROGRAMS[key]


def ensemble_predict(members: Sequence[tuple[Callable, object]], images: jax.Array, *,
                     weights: Sequence[float] | None = None, batch_size: int = 256) -> jax.Array:
    """Average the softmax outputs of several models, optionally weighted.

    `p = sum_m w_m * softmax(apply_fn_m(variables_m, images, train=False))` with the weights
    normalised to sum to 1 (equal weights by default).

    Args:
      members: non-empty sequence of `(apply_fn, variables)` pairs; `apply_fn(variables, x,
        train=False) -> logits [N, K]` with the same K for all.
      images: the batch given to every model; or a source, read `batch_size` images at a time in its
        stored order (as `tta_predict`).
      weights: None, or one non-negative weight per member, not all zero.
      batch_size: images per forward pass when `images` is a source.
    Returns: probabilities [N, K], compiled as one program with `jaxnets.jit` (once per tuple of
      `apply_fn`s and input shapes).
    Raises:
      ValueError: no members, `weights` of the wrong length, negative or all zero.
      TypeError: a member that is not an `(apply_fn, variables)` pair.
    """
    if not members:
        raise ValueError("ensemble_predict: members must be a non-empty sequence of (apply_fn, variables) pairs.")
    for i, member in enumerate(members):
        if not (isinstance(member, (tuple, list)) and len(member) == 2 and callable(member[0])):
            raise TypeError(f"ensemble_predict: members[{i}] must be an (apply_fn, variables) pair, got "
                            f"{type(member).__name__}.")
    if weights is None:
        weights = np.ones(len(members))
    shape = np.shape(weights)
    if shape != (len(members),):
        raise ValueError(f"ensemble_predict: weights must have one value per member ({len(members)}), got shape "
                         f"{shape}.")
    concrete = concrete_or_none(weights)
    if concrete is not None and (np.any(concrete < 0) or not np.any(concrete > 0)):
        raise ValueError(f"ensemble_predict: weights must be non-negative and not all zero, got "
                         f"{concrete.tolist()}.")
    if is_source(images):
        return _predict_source("ensemble_predict", lambda x: ensemble_predict(members, x, weights=weights),
                               images, batch_size)
    apply_fns = tuple(apply_fn for apply_fn, _ in members)
    return _compiled(_ensemble_average, apply_fns)(apply_fns, [v for _, v in members], images, weights)
