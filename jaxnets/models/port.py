"""`from_torch`: Flax variables for a registry model from a PyTorch `state_dict` with torchvision's names.

The mapping is generic, by name: a Flax submodule path joined by "_" equals the torch module path with
"." replaced by "_" (the naming rule of `jaxnets.models`), e.g.

    torch "layer1.0.downsample.1.running_mean"  <->  batch_stats ("layer1_0", "downsample_1", "mean")
    torch "features.0.weight" [O, I, kH, kW]    <->  params ("features_0", "kernel") [kH, kW, I, O]
    torch "fc.weight" [out, in]                 <->  params ("fc", "kernel") [in, out]

No torch import is needed here: tensors are recognised by their `detach` method.
"""
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

# Default input of each `variant=` (only shapes are traced, nothing is computed).
INPUT_SHAPES = {"imagenet": (224, 224, 3), "cifar": (32, 32, 3), "mnist": (28, 28, 1)}

# (Flax collection, leaf name) -> the torch parameter or buffer name.
_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "bias"): "bias", ("params", "scale"): "weight",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}
_IGNORED = ("num_batches_tracked",)  # BN's step counter: jaxnets' BatchNorm always uses `momentum`
_SHOWN = 12  # at most this many names per list in an error message


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor (or Parameter): no torch import needed
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _torch_layout(kernel: np.ndarray) -> np.ndarray:
    """PyTorch weight -> Flax kernel: Linear `[out, in]` -> `[in, out]`; conv `OI*spatial` -> `*spatial IO`."""
    return np.transpose(kernel, tuple(range(2, kernel.ndim)) + (1, 0))


def _default_variant(models, name: str) -> Any:
    """The default of the `variant=` option of the registry factory `name` (every model has one)."""
    parameter = inspect.signature(models._REGISTRY[name]).parameters.get("variant")
    return None if parameter is None else parameter.default


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def from_torch(name: str, state_dict: Mapping[str, Any], *, input_shape: tuple[int, ...] | None = None,
               **options) -> dict:
    """Variables of the registry model `name` holding the weights of a PyTorch `state_dict`.

    The model is built with `jaxnets.models.create(name, **options)` and its variable tree traced with
    `jax.eval_shape(model.init, ...)` (no computation); every leaf is then read from the torch key named by
    the rule above, converted and shape-checked:
      conv weight `[O, I / groups, *k]` -> kernel `[*k, I / groups, O]` (HWIO); Linear weight `[out, in]` ->
      kernel `[in, out]`; bias -> bias; BatchNorm weight -> scale, bias -> bias, running_mean -> mean,
      running_var -> var; `num_batches_tracked` is ignored. Values are cast to the model's dtype (float32).
    Kernels are assumed channels-last (the models' NHWC layout). Flatten layers need no permutation: the
    models flatten in PyTorch's (C, H, W) order.

    Args:
      name: a name of `jaxnets.models.available()` whose modules follow torchvision's naming.
      state_dict: torch key -> numpy array or torch tensor (e.g. `torch_model.state_dict()`).
      input_shape: `(H, W, C)` of one input image for tracing the model; default from `variant`:
        imagenet (224, 224, 3), cifar (32, 32, 3), mnist (28, 28, 1).
      **options: passed to `create` (`variant`, `num_classes`, `version`, `aux_logits`, ...): they must
        describe the same architecture as the torch network.
    Returns: `{"params": ..., "batch_stats": ...}`, exactly the collections `model.init` creates (no
      "batch_stats" for a model without BatchNorm), nested dicts of float32 `jax.Array`s; use as
      `model.apply(variables, x, train=False)`.
    Raises:
      ValueError: unknown model or option (from `create`); torch keys the model lacks ("unexpected") or model
        variables absent from the state_dict ("missing"), and shape mismatches, all listed in one message;
        two Flax paths that join to the same name.
      TypeError: a `state_dict` that is not a mapping.
    PyTorch: the inverse of `torch_model.load_state_dict(...)` with `strict=True`.
    """
    import jaxnets.models as models  # at call time: jaxnets.models imports this module

    fn = "from_torch"
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{fn}: state_dict must be a mapping from torch names to arrays (model.state_dict()), "
                        f"got {type(state_dict).__name__}.")
    model = models.create(name, **options)
    if input_shape is None:
        variant = options.get("variant", _default_variant(models, name))
        if variant not in INPUT_SHAPES:
            raise ValueError(f"{fn}: no default input shape for variant {variant!r} of model {name!r}; "
                             f"pass input_shape=(H, W, C).")
        input_shape = INPUT_SHAPES[variant]
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    # Expected torch key for every Flax leaf.
    wanted: dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]] = {}
    for path, leaf in flatten_dict(dict(shapes)).items():
        collection, *modules, leaf_name = path
        if (collection, leaf_name) not in _TORCH_LEAF:
            raise ValueError(f"{fn}: model {name!r} has variable {'/'.join(path)} with no PyTorch counterpart "
                             f"(known: params kernel/bias/scale, batch_stats mean/var).")
        key = "_".join(modules) + "." + _TORCH_LEAF[collection, leaf_name]
        if key in wanted:
            raise ValueError(f"{fn}: Flax paths {'/'.join(wanted[key][0])} and {'/'.join(path)} of model {name!r} "
                             f"both map to torch name {key!r}; rename one of the submodules.")
        wanted[key] = (path, leaf)

    # The same normal form for the torch names: "." -> "_" in the module path.
    given: dict[str, str] = {}
    for torch_key in state_dict:
        module, _, leaf_name = str(torch_key).rpartition(".")
        if leaf_name in _IGNORED:
            continue
        given[module.replace(".", "_") + "." + leaf_name] = torch_key

    # Sorted by module path, so that a module's params and batch_stats are listed together. Missing names
    # are shown in the normal form: "." and "_" are the same in a torch module path.
    ordered = sorted(wanted.items(), key=lambda item: item[1][0][1:])
    missing = [f"{'/'.join(path)} <- torch {key!r} ('.' = '_')" for key, (path, _) in ordered if key not in given]
    unexpected = sorted(given[k] for k in given if k not in wanted)
    mismatched, flat = [], {}
    for key, (path, leaf) in ordered:
        if key not in given:
            continue
        torch_key = given[key]
        value = _to_numpy(state_dict[torch_key])
        torch_shape = value.shape
        if path[-1] == "kernel" and value.ndim == len(leaf.shape) >= 2:
            value = _torch_layout(value)
        if value.shape != leaf.shape:
            mismatched.append(f"{torch_key} {torch_shape} -> {'/'.join(path)} needs {tuple(leaf.shape)}")
            continue
        flat[path] = jnp.asarray(value, dtype=leaf.dtype)
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"model variables missing from the state_dict ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected torch keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        raise ValueError(f"{fn}: the state_dict does not fit model {name!r} with options {options}: "
                         f"{'; '.join(problems)}. Check that the options (variant, num_classes, version, ...) "
                         f"describe the torch network and that its module names follow torchvision's.")
    return unflatten_dict(flat)
