"""Pure training and evaluation steps: `(state, batch) -> (state, metrics)` and `(state, batch) -> metrics`.

The steps are plain functions of arrays with no host round-trip: the caller compiles them (`jax.jit`,
or `jaxnets.train.compile_steps` for one or many devices); tests may call them unjitted.

Batches are dicts `{"image": [N, H, W, C] uint8 or float, "label": [N] int, "mask": [N] bool (optional)}`.
`mask` marks the valid rows of a padded batch (the last, short batch of an epoch, or a global batch
that does not divide evenly over the devices): padded rows contribute nothing to the loss, the
gradient, the metrics or the BatchNorm statistics.

Metrics are SUMS over the valid rows, `{"loss": sum of per-example losses (float32, or float64 for float64
losses), "correct": number of top-1 hits (int32), "count": number of valid rows (int32)}`, so epoch means and cross-device or
cross-host reductions are exact: the mean loss is `loss / count`, the accuracy `correct / count`.

The training step adds three global L2 norms of THIS step (not sums: each is the value at that step,
the same on every device, never summed over devices or steps), in float32 (float64 for float64 parameters):
`{"grad_norm": ||g||, "param_norm": ||params after the update||, "update_norm": ||params after - params
before||}`, where `g` is the gradient of the step's mean loss (global under `axis_name`; unscaled under
float16 loss scaling) and `||t|| = sqrt(sum of squares of every leaf of t)` (`optax.global_norm`). A
skipped float16 update has `update_norm` 0. PyTorch: `torch.nn.utils.clip_grad_norm_`'s returned total norm.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxnets.checks import at_least_float32
from jaxnets.data.augment import to_float
from jaxnets.data.validation import check_image_label_keys
from jaxnets.layers.losses import cross_entropy
from jaxnets.nn import BatchNorm
from jaxnets.nn.sequential import accepts_keyword
from jaxnets.train.precision import Policy, all_finite, as_policy
from jaxnets.train.state import TrainState

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


def _unpack(fn: str, batch) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """Check a batch dict and return `(images, labels, mask)`; shapes are static, so this runs at trace time."""
    check_image_label_keys(fn, "batch", batch, optional="'mask' [N]")
    images, labels, mask = jnp.asarray(batch["image"]), jnp.asarray(batch["label"]), batch.get("mask")
    n = images.shape[0] if images.ndim else None
    if n is None or labels.shape != (n,):
        raise ValueError(f"{fn}: batch['label'] must have shape [N] = ({n},) for batch['image'] of shape "
                         f"{tuple(images.shape)}, got {tuple(labels.shape)}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{fn}: batch['label'] must hold integer class indices, got dtype {labels.dtype}.")
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.shape != (n,):
            raise ValueError(f"{fn}: batch['mask'] must have shape [N] = ({n},), got {tuple(mask.shape)}.")
        mask = mask if mask.dtype == jnp.bool_ else mask != 0
    return images, labels, mask


def loss_takes_reduction(loss_fn: Callable) -> bool:
    """Whether `loss_fn` takes a `reduction` keyword (every `jaxnets.layers` loss does; a plain
    `lambda logits, labels: ...` does not)."""
    return accepts_keyword(loss_fn, "reduction")


def _per_example_loss(fn: str, loss_fn: Callable, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example losses `[N]`: `loss_fn(logits, labels, reduction="none")` when it takes `reduction`,
    else `loss_fn(logits, labels)`, which must then return one loss per example."""
    takes_reduction = loss_takes_reduction(loss_fn)
    losses = loss_fn(logits, labels, reduction="none") if takes_reduction else loss_fn(logits, labels)
    if jnp.shape(losses) != labels.shape:
        call = "loss_fn(logits, labels, reduction='none')" if takes_reduction else "loss_fn(logits, labels)"
        raise ValueError(f"{fn}: {call} must return per-example losses of shape {tuple(labels.shape)}, got "
                         f"{tuple(jnp.shape(losses))}. A loss averaged over the batch (torch's default "
                         f"reduction='mean') cannot be masked or summed across devices: return one loss per "
                         f"example, or take a `reduction` keyword like jaxnets.layers.cross_entropy.")
    return losses


def _sums(losses: jax.Array, logits: jax.Array, labels: jax.Array, mask: jax.Array | None,
          axis_name) -> Metrics:
    """The metric sums over the valid rows, summed over `axis_name` when given."""
    # Top-1 hit: the same rule as `layers.accuracy(k=1)` (argmax; among equal logits the lower index wins).
    hits = jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels  # argmax is int64 under x64
    if mask is not None:
        losses, hits = jnp.where(mask, losses, 0), hits & mask
    count = labels.shape[0] if mask is None else jnp.sum(mask, dtype=jnp.int32)
    metrics = {"loss": jnp.sum(losses, dtype=at_least_float32(losses.dtype)), "correct": jnp.sum(hits, dtype=jnp.int32),
               "count": jnp.asarray(count, jnp.int32)}
    return metrics if axis_name is None else jax.lax.psum(metrics, axis_name)


NORM_METRICS = ("grad_norm", "param_norm", "update_norm")


def _global_norm(tree) -> jax.Array:
    """`sqrt(sum of squares over every floating leaf)` in at least float32 (`optax.global_norm`'s value)."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    # float64 when any leaf is float64, else float32 (bfloat16/float16 squares would overflow or round).
    dtype = jnp.float64 if any(x.dtype == jnp.float64 for x in leaves) else jnp.float32
    return jnp.sqrt(sum((jnp.sum(jnp.square(x.astype(dtype))) for x in leaves), jnp.zeros((), dtype)))


def _norms(grads, params, new_params) -> Metrics:
    """The step's global norms (`NORM_METRICS`, see the module docstring); `grads` already global."""
    update = jax.tree.map(lambda new, old: new - old, new_params, params)
    return {"grad_norm": _global_norm(grads), "param_norm": _global_norm(new_params),
            "update_norm": _global_norm(update)}


def _module_path(module: nn.Module) -> str:
    path = getattr(module.scope, "path", ()) if module.scope is not None else ()
    return "/".join(path) or type(module).__name__


def _bn_in_training(module: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Whether this BatchNorm call uses batch statistics (jaxnets' `train=`, Flax's `use_running_average`)."""
    if isinstance(module, BatchNorm):
        return bool(kwargs.get("train", args[1] if len(args) > 1 else False))
    use_running = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
    return not nn.merge_param("use_running_average", module.use_running_average, use_running)


def _check_batch_norm_axis(fn: str, axis_name):
    """Flax method interceptor that checks (and changes nothing) every BatchNorm called in training mode:
    its `axis_name` must be the step's. Under `shard_map`/`pmap` a BN layer without it would normalise
    each device's shard with its own statistics (not the global batch's), and a BN layer with an axis
    name under plain `jit` names an axis that does not exist."""
    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name == "__call__" and isinstance(module, (BatchNorm, nn.BatchNorm))
                and _bn_in_training(module, args, kwargs) and module.axis_name != axis_name):
            raise ValueError(f"{fn}: BatchNorm {_module_path(module)!r} has axis_name={module.axis_name!r} but the "
                             f"step runs with axis_name={axis_name!r}; create the model with "
                             f"axis_name={axis_name!r} (`compile_steps(...).axis_name`) so that its statistics "
                             f"cover the whole global batch.")
        return next_fun(*args, **kwargs)

    return intercept


def model_takes_mask(apply_fn: Callable) -> bool:
    """Whether the model behind `apply_fn` takes a `mask` keyword in `__call__` (as every jaxnets model does).

    `apply_fn` is a Flax module's `apply` (`TrainState.apply_fn`); for any other function the answer is
    True (the step passes `mask` and the function decides).
    """
    module = getattr(apply_fn, "__self__", None)
    return not isinstance(module, nn.Module) or accepts_keyword(module, "mask")


def _model_kwargs(fn: str, apply_fn: Callable, mask: jax.Array | None) -> dict:
    """`{"mask": mask}` for a padded batch, `{}` without one; TypeError for a model that cannot take it."""
    if mask is None:
        return {}
    if not model_takes_mask(apply_fn):
        name = type(apply_fn.__self__).__name__
        raise TypeError(f"{fn}: the batch has a 'mask' (padded rows) but {name}.__call__ takes no `mask` keyword, "
                        f"so its BatchNorm statistics would include the padded rows; add `mask=None` to "
                        f"{name}.__call__ and pass it to every BatchNorm (as `train`), or use batches without "
                        f"padding (a batch size divisible by the number of devices).")
    return {"mask": mask}


def _check_precision(fn: str, policy: Policy, state: TrainState) -> None:
    """The state fits the policy: parameters in its `param_dtype`, a loss scale for float16 (trace time)."""
    dtypes = {x.dtype.name for x in jax.tree.leaves(state.params) if jnp.issubdtype(x.dtype, jnp.floating)}
    if dtypes - {policy.param_dtype.name}:
        raise ValueError(f"{fn}: precision {str(policy)!r} keeps the parameters in {policy.param_dtype.name}, but "
                         f"state.params hold {sorted(dtypes)}; create the state with "
                         f"TrainState.create(..., precision={str(policy)!r}).")
    if policy.needs_loss_scale and state.loss_scale is None:
        raise ValueError(f"{fn}: precision {str(policy)!r} computes in float16, which needs dynamic loss scaling, "
                         f"but state.loss_scale is None; create the state with "
                         f"TrainState.create(..., precision={str(policy)!r}) (or loss_scale=DynamicLossScale.create()).")


def _casts(fn: str, precision) -> tuple[Policy | None, Callable, Callable]:
    """`(policy, to_compute, to_output)`; None and identities without `precision` (the float32 step, unchanged)."""
    if precision is None:
        return None, lambda tree: tree, lambda tree: tree
    policy = as_policy(fn, precision)
    return policy, policy.cast_to_compute, policy.cast_to_output


def _apply_unless_skipped(state: TrainState, new: TrainState, finite: jax.Array) -> TrainState:
    """`new` where the gradients were finite, else `state`'s params, opt_state and batch_stats with `new`'s
    step; the loss scale adjusted either way (`DynamicLossScale.adjust`)."""
    keep = {name: jax.tree.map(lambda a, b: jnp.where(finite, a, b), getattr(new, name), getattr(state, name))
            for name in ("params", "opt_state", "batch_stats")}
    return new.replace(**keep, loss_scale=state.loss_scale.adjust(finite))


def make_train_step(loss_fn: Callable = cross_entropy, *, preprocess: Callable | None = None,
                    augment: Callable | None = None, axis_name=None, precision=None
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Build the pure training step `train_step(state, batch) -> (state, metrics)`.

    One step: draw keys, augment and preprocess the images, run the model in training mode, take the
    gradient of the mean loss over the valid rows and apply one optimizer update:

        key = fold_in(state.rng, state.step)            (then fold_in(key, axis_index) under axis_name)
        augment_key, dropout_key = split(key)
        x = preprocess(augment(augment_key, images))
        loss = sum_{valid i} loss_fn(model(x)_i, label_i) / (number of valid rows)
        state = state.apply_gradients(grad(loss), batch_stats=<updated running statistics>)

    The model is called as `state.apply_fn(variables, x, train=True, rngs={"dropout": dropout_key},
    mutable=["batch_stats"])` (no `mutable` for a model without BatchNorm). Padded rows (`mask` False)
    contribute nothing to the loss, the gradient or the BatchNorm statistics: for a batch with a `mask`
    and a model with BatchNorm state the step calls `state.apply_fn(..., train=True, mask=mask, ...)`,
    and the model passes `mask` to every BatchNorm as it passes `train` (every jaxnets model does; a
    `jaxnets.nn.BatchNorm`'s statistics are then `sum over valid rows / number of valid rows`,
    `layers.batch_norm`). A model without BatchNorm state is called without `mask`, so a model of
    your own needs a `mask` keyword only if it has BatchNorm and gets padded batches. Other layers must
    not mix the rows of the batch (none in `jaxnets.nn` does): they would see the padded rows.

    With a `precision` policy (`jaxnets.train.precision`) the model runs on
    `policy.cast_to_compute(params)` and `policy.cast_to_compute(x)`, its logits are cast to
    `policy.output_dtype` (float32) before the loss, and the gradients reach the master parameters in
    their own dtype; `batch_stats` stay float32. When `state.loss_scale` is set (float16), the
    gradient is taken of `loss * scale`, divided by `scale` (after the `psum` under `axis_name`, so every
    device sees the same gradients and makes the same decision), and if any gradient is not finite the
    update is skipped: params, opt_state and batch_stats stay bitwise as they were (PyTorch's
    GradScaler skips `optimizer.step()` but keeps the BatchNorm buffers the skipped forward updated),
    `step` still advances, and the scale backs off; see `DynamicLossScale` for its growth.

    With `axis_name` (per-device code under `shard_map` or `pmap` over that axis) the step is exact for
    the GLOBAL batch, also when devices hold different numbers of valid rows: the loss is divided by
    `psum(count)` (not a mean of per-device means), the gradients and metrics are `psum`-ed, and every
    BatchNorm must have been created with the same `axis_name` (else ValueError), so that its
    statistics are `psum(sum) / psum(count)` over all devices. The differentiation relies on `psum`
    being its own transpose, true under `pmap` and `shard_map(..., check_vma=False)`, which
    `compile_steps` uses. Dropout and augmentation keys are then also folded with the device index:
    devices draw different masks, but not the single-device run's (the "sharded" mode, which computes
    on the global batch, draws exactly the single-device keys).

    Args:
      loss_fn: per-example losses `[N]`, called as `loss_fn(logits, labels, reduction="none")` when it
        takes a `reduction` keyword (every `jaxnets.layers` loss), else as `loss_fn(logits, labels)`; default
        `layers.cross_entropy` (use `functools.partial` for options such as `label_smoothing`). The
        step averages over valid rows: with class `weights` this is not PyTorch's weighted mean.
      preprocess: `images -> float images`, applied after `augment`; default `data.augment.to_float`
        (uint8 -> float32 in [0, 1]; float images pass through unchanged).
      augment: `(key, images) -> images`, applied to the raw batch images (as torchvision transforms run
        before `ToTensor`/`Normalize`), e.g. `data.augment.compose(random_crop, random_flip)`; None: none.
      axis_name: the mapped axis of the devices (e.g. "batch"), or None for one program over the whole batch.
      precision: None (float32: nothing is cast, the step is bitwise the float32 one), a dtype name
        ("bfloat16", "float16") or a `precision.Policy`.
    Returns: `train_step(state, batch) -> (new_state, metrics)`; metrics as in the module docstring
      (global sums under `axis_name`), `{"loss", "correct", "count", "grad_norm", "param_norm", "update_norm"}`.
    Raises (at trace time): ValueError/TypeError for a malformed batch, a `loss_fn` that does not return
      `[N]` losses, a BatchNorm whose `axis_name` is not the step's, or a state that does not fit the
      precision (parameters not in its `param_dtype`; float16 without `state.loss_scale`); TypeError
      for a batch with a `mask` and a model with BatchNorm whose `__call__` takes no `mask` keyword.
      TypeError/ValueError (at once) for a bad `precision`.
    PyTorch: `model.train(); loss = criterion(model(x), y); opt.zero_grad(); loss.backward(); opt.step()`;
      with float16, `torch.autocast` + `GradScaler`'s `scale(loss).backward(); scaler.step(opt); scaler.update()`.
    """
    fn = "train_step"
    preprocess = to_float if preprocess is None else preprocess
    policy, to_compute, to_output = _casts("make_train_step", precision)

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        images, labels, mask = _unpack(fn, batch)
        if policy is not None:
            _check_precision(fn, policy, state)
        key = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        augment_key, dropout_key = jax.random.split(key)
        if augment is not None:
            images = augment(augment_key, images)
        x = to_compute(preprocess(images))
        if mask is not None:
            labels = jnp.where(mask, labels, 0)  # padded rows may hold any label; keep their (discarded) loss finite
        count = labels.shape[0] if mask is None else jnp.sum(mask, dtype=jnp.int32)
        total = count if axis_name is None else jax.lax.psum(count, axis_name)
        # Divide by the GLOBAL number of valid rows (>= 1 so an all-padding batch gives 0, not nan).
        denominator = jnp.maximum(jnp.asarray(total, jnp.float32), 1.0)
        has_stats = bool(state.batch_stats)
        # The mask reaches the model (and its BatchNorm layers) only with BatchNorm state: a model without
        # it has nothing that mixes the rows, and the loss and metrics below mask the padded rows themselves.
        model_kwargs = _model_kwargs(fn, state.apply_fn, mask) if has_stats else {}

        loss_scale = state.loss_scale

        def loss_of(params):
            params = to_compute(params)
            variables = {"params": params, **({"batch_stats": state.batch_stats} if has_stats else {})}
            with nn.intercept_methods(_check_batch_norm_axis(fn, axis_name)):
                if has_stats:
                    logits, updates = state.apply_fn(variables, x, train=True, rngs={"dropout": dropout_key},
                                                     mutable=["batch_stats"], **model_kwargs)
                else:
                    logits, updates = state.apply_fn(variables, x, train=True, rngs={"dropout": dropout_key},
                                                     **model_kwargs), {}
            logits = to_output(logits)
            losses = _per_example_loss(fn, loss_fn, logits, labels)
            valid = losses if mask is None else jnp.where(mask, losses, 0)
            loss = jnp.sum(valid, dtype=jnp.float32) / denominator
            return loss if loss_scale is None else loss_scale.scale_loss(loss), (logits, losses, updates)

        grads, (logits, losses, updates) = jax.grad(loss_of, has_aux=True)(state.params)
        if axis_name is not None:
            grads = jax.lax.psum(grads, axis_name)  # each device holds d(its rows' loss sum)/dparams / global count
        if loss_scale is not None:
            grads = loss_scale.unscale(grads)
        new_state = state.apply_gradients(grads, batch_stats=updates["batch_stats"] if has_stats else None)
        if loss_scale is not None:
            new_state = _apply_unless_skipped(state, new_state, all_finite(grads))
        # The norms come after the psums: they are already global, the same on every device (not summed again).
        return new_state, {**_sums(losses, logits, labels, mask, axis_name),
                           **_norms(grads, state.params, new_state.params)}

    return train_step


def make_eval_step(loss_fn: Callable = cross_entropy, *, preprocess: Callable | None = None,
                   axis_name=None, precision=None) -> Callable[[TrainState, Batch], Metrics]:
    """Build the pure evaluation step `eval_step(state, batch) -> metrics`.

    The model runs with `train=False` (running BatchNorm statistics, no dropout), so no key is drawn
    and nothing is mutated. Metrics are the sums over the valid rows (`mask`), `psum`-ed over
    `axis_name` when given.

    Args:
      loss_fn, preprocess: as in `make_train_step` (no augmentation at evaluation).
      axis_name: the mapped axis of the devices, or None.
      precision: as in `make_train_step`: parameters and inputs cast to its compute dtype, logits to
        its output dtype (no loss scale at evaluation).
    Returns: `eval_step(state, batch) -> {"loss", "correct", "count"}`.
    Raises (at trace time): ValueError/TypeError for a malformed batch or a `loss_fn` that does not
      return `[N]` losses; TypeError/ValueError (at once) for a bad `precision`.
    PyTorch: `model.eval(); with torch.no_grad(): criterion(model(x), y)`.
    """
    fn = "eval_step"
    preprocess = to_float if preprocess is None else preprocess
    _, to_compute, to_output = _casts("make_eval_step", precision)

    def eval_step(state: TrainState, batch: Batch) -> Metrics:
        images, labels, mask = _unpack(fn, batch)
        if mask is not None:
            labels = jnp.where(mask, labels, 0)
        variables = {**state.variables, "params": to_compute(state.params)}
        logits = to_output(state.apply_fn(variables, to_compute(preprocess(images)), train=False))
        losses = _per_example_loss(fn, loss_fn, logits, labels)
        return _sums(losses, logits, labels, mask, axis_name)

    return eval_step
