"""`Sequential`: call layers in order, passing `train` to those that take it."""
import functools
import inspect
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax


@functools.lru_cache(maxsize=None)
def _takes_train(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
    p = params.get("train")
    return p is not None and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def accepts_train(layer: Callable) -> bool:
    """Whether calling `layer` takes a `train` keyword (a Flax module's `__call__`, or a plain function).

    Inspected once per module class (or function) and cached.
    """
    fn = type(layer).__call__ if isinstance(layer, nn.Module) else layer
    return _takes_train(fn)


class Sequential(nn.Module):
    """Apply `layers` in order: `y = layers[-1](... layers[0](x))`.

    Each layer that accepts a `train` keyword (`BatchNorm`, `Dropout`, nested `Sequential`, models) gets
    `train=train`; the others are called as `layer(x)`. Layers may be Flax modules (their submodule names
    are "layers_0", "layers_1", ...) or plain functions such as `jaxnets.layers.relu`.

    `__call__(x, *, train)`: `train` is required, as everywhere in jaxnets.
    Raises: ValueError if `layers` is empty; TypeError if an entry is not callable.
    PyTorch: `torch.nn.Sequential(*layers)` (where `model.train()`/`model.eval()` sets the mode instead).
    """

    layers: Sequence[Callable]

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if not self.layers:
            raise ValueError("Sequential: layers must be a non-empty sequence of modules or functions, "
                             "got an empty one.")
        for i, layer in enumerate(self.layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layers[{i}] must be a module or a function, got {type(layer).__name__}.")
            x = layer(x, train=train) if accepts_train(layer) else layer(x)
        return x
