"""`from_torch`: Flax variables from a PyTorch `state_dict`, for a registry model or any Flax module.

The mapping is generic, by name (after the optional `rename=`): a Flax submodule path joined by "_" equals the torch module path with
"." replaced by "_" (the naming rule of `jaxnets.models`), e.g.

    torch "layer1.0.downsample.1.running_mean"  <->  batch_stats ("layer1_0", "downsample_1", "mean")
    torch "features.0.weight" [O, I, kH, kW]    <->  params ("features_0", "kernel") [kH, kW, I, O]
    torch "fc.weight" [out, in]                 <->  params ("fc", "kernel") [in, out]
    torch "conv.weight" [O, I, kH, kW]          <->  params ("conv", "kernel") [O, I, kH, kW] for a
                                                     `jaxnets.nn.Conv(..., layout="NCHW")` (OIHW kernel)

No torch import is needed here: tensors are recognised by their `detach` method.
"""
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxnets import nn as jnn
from jaxnets.checks import is_channels_last, is_int
from jaxnets.models.registry import create, defaults

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


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")



Rename = Mapping[str, "str | None"] | Callable[[str], "str | None"] | None


def _renamer(fn: str, rename: Rename) -> Callable[[str], str | None]:
    """`rename=` as a function torch key -> new key (None: drop the key); see `from_torch`."""
    if rename is None:
        return lambda key: key
    if isinstance(rename, Mapping):
        for old, new in rename.items():
            if not isinstance(old, str) or not (new is None or isinstance(new, str)):
                raise TypeError(f"{fn}: rename must map torch keys or prefixes (str) to new names (str, or None "
                                f"to drop), got {old!r}: {new!r}.")
        prefixes = sorted(rename, key=len, reverse=True)  # the longest matching prefix wins

        def by_mapping(key: str) -> str | None:
            if key in rename:
                return rename[key]
            for prefix in prefixes:
                # A prefix matches whole module names: "head" renames "head.weight", not "header.weight".
                if prefix and key.startswith(prefix) and (prefix.endswith(".") or key[len(prefix)] == "."):
                    new = rename[prefix]
                    return None if new is None else new + key[len(prefix):]
            return key

        return by_mapping
    if callable(rename):
        def by_function(key: str) -> str | None:
            new = rename(key)
            if new is not None and not isinstance(new, str):
                raise TypeError(f"{fn}: rename({key!r}) must return a str (or None to drop the key), "
                                f"got {type(new).__name__} {new!r}.")
            return new

        return by_function
    raise TypeError(f"{fn}: rename must be None, a mapping {{torch prefix or key: new name}} or a function "
                    f"key -> key, got {type(rename).__name__}.")


def _check_input_shape(fn: str, input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, str) or not isinstance(input_shape, Sequence) \
            or not all(is_int(d) for d in input_shape):
        raise TypeError(f"{fn}: input_shape must be a tuple of ints, the shape of ONE input without the batch "
                        f"axis such as (H, W, C), got {input_shape!r}.")
    if not input_shape or any(d < 1 for d in input_shape):
        raise ValueError(f"{fn}: input_shape must be a non-empty tuple of positive ints such as (32, 32, 3), "
                         f"got {tuple(input_shape)!r}.")
    return tuple(int(d) for d in input_shape)


def _trace(fn: str, described: str, model: nn.Module,
           input_shape: tuple[int, ...]) -> tuple[dict, set[tuple[str, ...]]]:
    """The variable shapes of `model.init` on one float32 input (no computation) and the module paths of
    the channels-first `jaxnets.nn.Conv`s, whose kernels are PyTorch's OIHW (no transpose)."""
    channels_first: set[tuple[str, ...]] = set()

    def spy(next_fun, args, kwargs, context):
        if isinstance(context.module, jnn.Conv) and context.method_name == "__call__":
            if not is_channels_last(fn, context.module.layout):
                channels_first.add(tuple(context.module.path))
        return next_fun(*args, **kwargs)

    def init(x):
        with nn.intercept_methods(spy):
            return model.init(jax.random.key(0), x, train=False)

    try:
        shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    except ValueError as error:  # a layer's shape error: say which input it was traced on
        raise ValueError(f"{fn}: {described} cannot be traced on an input of shape {(1, *input_shape)} "
                         f"(input_shape={input_shape}): {error} Is input_shape in the module's layout ((H, W, C) "
                         f"for NHWC, (C, H, W) for NCHW)?") from error
    return dict(shapes), channels_first


def from_torch(model: str | nn.Module, state_dict: Mapping[str, Any], *,
               input_shape: tuple[int, ...] | None = None, rename: Rename = None, dtype=None, **options) -> dict:
    """Variables of a Flax model holding the weights of a PyTorch `state_dict`.

    `model` is a registry name (built with `jaxnets.models.create(model, **options)`) or a Flax module
    instance (yours: its submodule names must be the torch module paths with "." -> "_", e.g. a torch
    `self.features = nn.Sequential(conv, bn, ...)` is `jnn.Conv(..., name="features_0")`,
    `jnn.BatchNorm(name="features_1")`; it is called as `module(x, *, train)`). Its variable tree is traced
    with `jax.eval_shape(model.init, ...)` (no computation); every leaf is then read from the torch key named
    by the rule above, converted and shape-checked:
      conv weight `[O, I / groups, *k]` -> kernel `[*k, I / groups, O]` (HWIO), or unchanged for a
      `jaxnets.nn.Conv` with a channels-first `layout` (its kernel is OIHW); Linear weight `[out, in]` ->
      kernel `[in, out]`; bias -> bias; BatchNorm weight -> scale, bias -> bias, running_mean -> mean,
      running_var -> var; `num_batches_tracked` is ignored. Values are cast to the model's dtype (float32),
      or to `dtype`.
    Flatten layers need no permutation: `jaxnets.nn.Flatten` flattens in PyTorch's (C, H, W) order.

    Args:
      model: a name of `jaxnets.models.available()` (torchvision's naming), or a `flax.linen.Module`.
      state_dict: torch key -> numpy array or torch tensor (e.g. `torch_model.state_dict()`).
      input_shape: the shape of ONE input without the batch axis, e.g. `(H, W, C)` for an NHWC model or
        `(C, H, W)` for an NCHW one; required for a module instance. For a registry name the default comes
        from `variant`: imagenet (224, 224, 3), cifar (32, 32, 3), mnist (28, 28, 1).
      rename: applied to every state_dict key before matching; None (default), or
        - a mapping `{torch key or prefix: new name}`: an exact key is replaced whole; otherwise the longest
          prefix matching whole module names is replaced (`{"module.": ""}` strips DataParallel's prefix,
          `{"head": "fc"}` turns "head.weight" into "fc.weight" but leaves "header.weight"); a new name of
          None drops the matching keys;
        - a function `key -> new key` (or None to drop the key), e.g.
          `lambda k: k.removeprefix("backbone.")`.
        "." and "_" are interchangeable in module paths, so new names may use either.
      dtype: None (the model's own dtypes, float32) or a floating dtype for every leaf, e.g. `jnp.float64`
        (with `jax_enable_x64` on) to replay a float64 torch recipe: the layers compute in the dtype of the
        variables and inputs they are given.
      **options: for a registry name only, passed to `create` (`variant`, `num_classes`, `version`, ...):
        they must describe the same architecture as the torch network.
    Returns: `{"params": ..., "batch_stats": ...}`, exactly the collections `model.init` creates (no
      "batch_stats" for a model without BatchNorm), nested dicts of float32 `jax.Array`s; use as
      `model.apply(variables, x, train=False)`, or start training from them with
      `TrainState.create(..., variables=variables)`.
    Raises:
      ValueError: unknown model or option (from `create`); options given with a module instance; a missing
        or bad `input_shape`, or one the model cannot be traced on; torch keys the model lacks ("unexpected"), model variables absent from the
        state_dict ("missing") and shape mismatches (each with the torch shape, the converted shape and the
        shape the model needs), all listed in one message; two keys renamed to the same name; two Flax
        paths that join to the same name; a variable with no PyTorch counterpart.
      TypeError: `model` neither a string nor a Flax module, a `state_dict` that is not a mapping, a `rename`
        of the wrong type, an `input_shape` that is not a tuple of ints.
    PyTorch: the inverse of `torch_model.load_state_dict(...)` with `strict=True`.
    """
    fn = "from_torch"
    if dtype is not None and not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise ValueError(f"{fn}: dtype must be None or a floating dtype such as jnp.float64, got {dtype!r}.")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"{fn}: state_dict must be a mapping from torch names to arrays (model.state_dict()), "
                        f"got {type(state_dict).__name__}.")
    renamed = _renamer(fn, rename)
    if isinstance(model, str):
        described = f"model {model!r} with options {options}"
        hint = ("Check that the options (variant, num_classes, version, ...) describe the torch network and that "
                "its module names follow torchvision's (or pass rename=).")
        module = create(model, **options)
        if input_shape is None:
            variant = options.get("variant", defaults(model).get("variant"))
            if variant not in INPUT_SHAPES:
                raise ValueError(f"{fn}: no default input shape for variant {variant!r} of model {model!r}; "
                                 f"pass input_shape=(H, W, C).")
            input_shape = INPUT_SHAPES[variant]
    elif isinstance(model, nn.Module):
        described = f"module {type(model).__name__}"
        hint = ("Check that the module's submodule names are the torch module paths with '.' -> '_' "
                "(or pass rename=) and that input_shape describes one input.")
        module = model
        if options:
            raise ValueError(f"{fn}: options {sorted(options)} are for registry names; configure the module "
                             f"{type(model).__name__} itself when you construct it.")
        if input_shape is None:
            raise ValueError(f"{fn}: input_shape is required for a module instance ({type(model).__name__}): "
                             f"the shape of one input without the batch axis, e.g. input_shape=(32, 32, 3) "
                             f"for NHWC or (3, 32, 32) for NCHW.")
    else:
        raise TypeError(f"{fn}: model must be a registry name (str) or a flax.linen.Module instance, "
                        f"got {type(model).__name__}.")
    shapes, channels_first = _trace(fn, described, module, _check_input_shape(fn, input_shape))

    # Expected torch key for every Flax leaf.
    wanted: dict[str, tuple[tuple[str, ...], jax.ShapeDtypeStruct]] = {}
    for path, leaf in flatten_dict(shapes).items():
        collection, *modules, leaf_name = path
        if (collection, leaf_name) not in _TORCH_LEAF:
            raise ValueError(f"{fn}: {described} has variable {'/'.join(path)} with no PyTorch counterpart "
                             f"(known: params kernel/bias/scale, batch_stats mean/var).")
        key = "_".join(modules) + "." + _TORCH_LEAF[collection, leaf_name]
        if key in wanted:
            raise ValueError(f"{fn}: Flax paths {'/'.join(wanted[key][0])} and {'/'.join(path)} of {described} "
                             f"both map to torch name {key!r}; rename one of the submodules.")
        wanted[key] = (path, leaf)

    # The same normal form for the (renamed) torch names: "." -> "_" in the module path.
    given: dict[str, str] = {}
    shown: dict[str, str] = {}  # torch key -> how it is shown in messages
    for torch_key in state_dict:
        new = renamed(str(torch_key))
        if new is None:
            continue
        shown[torch_key] = str(torch_key) if new == torch_key else f"{torch_key} (renamed {new})"
        module_path, _, leaf_name = new.rpartition(".")
        if leaf_name in _IGNORED:
            continue
        normal = module_path.replace(".", "_") + "." + leaf_name
        if normal in given:
            raise ValueError(f"{fn}: torch keys {shown[given[normal]]!r} and {shown[torch_key]!r} both become "
                             f"{normal!r} ('.' = '_'); fix rename= or the state_dict.")
        given[normal] = torch_key

    # Sorted by module path, so that a module's params and batch_stats are listed together. Missing names
    # are shown in the normal form: "." and "_" are the same in a torch module path.
    ordered = sorted(wanted.items(), key=lambda item: item[1][0][1:])
    missing = [f"{'/'.join(path)} <- torch {key!r} ('.' = '_')" for key, (path, _) in ordered if key not in given]
    unexpected = sorted(shown[given[k]] for k in given if k not in wanted)
    mismatched, flat = [], {}
    for key, (path, leaf) in ordered:
        if key not in given:
            continue
        torch_key = given[key]
        value = _to_numpy(state_dict[torch_key])
        torch_shape = value.shape
        # Kernels: Flax's [in, out] / HWIO, except a channels-first jnn.Conv, which keeps PyTorch's OIHW.
        if path[-1] == "kernel" and value.ndim >= 2 and tuple(path[1:-1]) not in channels_first:
            value = _torch_layout(value)
        if value.shape != leaf.shape:
            mismatched.append(f"{shown[torch_key]}: torch {torch_shape} -> converted {value.shape} but "
                              f"{'/'.join(path)} needs {tuple(leaf.shape)}")
            continue
        flat[path] = jnp.asarray(value, dtype=leaf.dtype if dtype is None else dtype)
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"model variables missing from the state_dict ({len(missing)}): {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected torch keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        raise ValueError(f"{fn}: the state_dict does not fit {described}: {'; '.join(problems)}. {hint}")
    return unflatten_dict(flat)
