"""`recompute_batch_stats`: exact population BatchNorm statistics over a dataset, layer by layer."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.checks import at_least_float32, is_channels_last
from jaxnets.data.augment import to_float
from jaxnets.data.batches import Batches
from jaxnets.data.pipeline import Loader, is_source
from jaxnets.layers.normalization import masked_moments
from jaxnets.nn import BatchNorm
from jaxnets.train.state import TrainState

__all__ = ["recompute_batch_stats"]


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


def _moments(fn: str, x: jax.Array, mask: jax.Array, layout: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-channel (count, mean, sum of squared deviations) over the valid rows of `x`, from
    `layers.normalization.masked_moments` (two-pass, at least float32)."""
    axis = x.ndim - 1 if (is_channels_last(fn, layout) or x.ndim == 2) else 1
    x = x.astype(at_least_float32(x.dtype))
    mean, var, count = masked_moments(x, tuple(a for a in range(x.ndim) if a != axis), mask=mask)
    # The merge needs M2 = n * biased variance, and a count per channel (every channel sees the same values).
    return jnp.broadcast_to(count, mean.size), mean.reshape(-1), var.reshape(-1) * count


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
    computed on the device in float32 (two-pass, `layers.normalization.masked_moments`), and merged
    across batches on the host in float64 (Chan et al.'s parallel formula). Costs one pass over `data`
    per BatchNorm layer, each stopping at that layer (the rest of the network is dead code that XLA
    removes). No augmentation is applied.

    The alternative to the running averages of training (`momentum`): the same as PyTorch's
    `BatchNorm(momentum=None)` cumulative average run over the data in eval-mode order, but exact.

    Args:
      state: a `TrainState` (one copy of every array, as `fit` returns).
      data: `{"image": [N, H, W, C], "label": [N]}` (labels are ignored), a source
        (`jaxnets.data.ImageFolder`, `ArraySource`, ...; read in stored order) or a `Batches`/`Loader`,
        used as given (create it with `shuffle=False, drop_last=False` so that every example counts once).
      batch_size: examples per forward pass (for a dict or a source).
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
    if is_source(data):  # ImageFolder, ArraySource, ...: read in stored order, the last batch padded and masked
        data = Loader(data, min(int(batch_size), len(data)), shuffle=False, drop_last=False)
    if isinstance(data, Batches):
        batches = data
    else:
        if not isinstance(data, Mapping) or "image" not in data:
            raise TypeError(f"{fn}: data must be a dict with 'image' [N, H, W, C], a Batches or a source, got "
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
                    captured.append(_moments(fn, x, mask, module.layout))
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
            # A Loader pads its last batch itself and says which rows are real; a Batches gives it short.
            mask = np.asarray(batch["mask"], bool) if "mask" in batch else np.arange(size) < n
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
