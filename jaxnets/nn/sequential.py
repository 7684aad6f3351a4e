"""`Sequential`: call layers in order, passing `train` (and `mask`) to those that take it."""
import functools
import inspect
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


@functools.lru_cache(maxsize=None)
def _takes(fn: Callable, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    p = params.get(name)
    return p is not None and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def accepts_keyword(layer: Callable, name: str) -> bool:
    """Whether calling `layer` takes the keyword `name` (a Flax module's `__call__`, or a plain function).

    Inspected once per module class (or function) and keyword, and cached.
    """
    fn = type(layer).__call__ if isinstance(layer, nn.Module) else layer
    return _takes(fn, name)


def accepts_train(layer: Callable) -> bool:
    """Whether calling `layer` takes a `train` keyword: `accepts_keyword(layer, "train")`."""
    return accepts_keyword(layer, "train")


class Sequential(nn.Module):
    """Apply `layers` in order: `y = layers[-1](... layers[0](x))`.

    Each layer that accepts a `train` keyword (`BatchNorm`, `Dropout`, nested `Sequential`, models) gets
    `train=train`, and each that accepts a `mask` keyword (`BatchNorm`, nested `Sequential`, models) gets
    `mask=mask`; the others are called as `layer(x)`. Layers may be Flax modules (their submodule names
    are "layers_0", "layers_1", ...) or plain functions such as `jaxnets.layers.relu`.

    `__call__(x, *, train, mask=None)`: `train` is required, as everywhere in jaxnets; `mask` (`[N]` bool,
    the valid rows of a padded batch) reaches every BatchNorm, which leaves the other rows out of its
    statistics.
    Raises: ValueError if `layers` is empty; TypeError if an entry is not callable.
    PyTorch: `torch.nn.Sequential(*layers)` (where `model.train()`/`model.eval()` sets the mode instead).
    """

    layers: Sequence[Callable]

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        if not self.layers:
            raise ValueError("Sequential: layers must be a non-empty sequence of modules or functions, "
                             "got an empty one.")
        for i, layer in enumerate(self.layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layers[{i}] must be a module or a function, got {type(layer).__name__}.")
            options = {}
            if accepts_keyword(layer, "train"):
                options["train"] = train
            if mask is not None and accepts_keyword(layer, "mask"):
                options["mask"] = mask
            x = layer(x, **options)
        return x
