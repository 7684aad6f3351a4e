"""Multilayer perceptron for MNIST-sized inputs (any input shape: it is flattened first)."""
from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxnets import nn as jnn
from jaxnets.checks import check_int, check_positive_int
from jaxnets.layers.activations import get_activation
from jaxnets.models.registry import check_rate, check_variant, default_classes, register


class MLP(nn.Module):
    """Flatten -> [Dense -> (BatchNorm) -> activation -> (Dropout)] per hidden layer -> Dense.

    The first `batch_norm_layers` hidden layers are Dense (no bias: BN's shift subsumes it) -> BN ->
    activation; the remaining ones Dense -> activation; dropout (the identity at `dropout=0`) after every hidden
    activation; then the output Dense. Input: any `[N, ...]` float array, flattened in PyTorch's
    (C, H, W) order.

    Submodules: "dense_{i}" and (for i < batch_norm_layers) "bn_{i}" per hidden layer i, "head" (output).
    Initialisation: PyTorch's `nn.Linear` defaults (the `jnn.Dense` default).
    PyTorch: `nn.Sequential(nn.Flatten(), nn.Linear(d, h0, bias=False), nn.BatchNorm1d(h0), nn.ReLU(), ...,
    nn.Linear(h_last, num_classes))`.
    """

    hidden: Sequence[int]
    num_classes: int
    activation: str = "relu"
    batch_norm_layers: int = 0
    dropout: float = 0.0
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        x = jnn.Flatten()(x)
        for i, width in enumerate(self.hidden):
            with_bn = i < self.batch_norm_layers
            x = jnn.Dense(width, use_bias=not with_bn, name=f"dense_{i}")(x)
            if with_bn:
                x = jnn.BatchNorm(axis_name=self.axis_name, name=f"bn_{i}")(x, train=train, mask=mask)
            x = jnn.Activation(self.activation)(x)
            x = jnn.Dropout(self.dropout)(x, train=train)  # rate 0: the identity, no key drawn
        return jnn.Dense(self.num_classes, name="head")(x)


@register("mlp")
def mlp(*, hidden: Sequence[int] = (512, 256), activation: str = "relu", batch_norm_layers: int = 0,
        dropout: float = 0.0, num_classes: int | None = None, variant: str = "mnist",
        axis_name: str | None = None) -> MLP:
    """Multilayer perceptron (see `MLP`).

    Args:
      hidden: widths of the hidden layers, e.g. `(512, 256)` (default).
      activation: a `layers.get_activation` name ("relu" default, "tanh", "gelu", ...).
      batch_norm_layers: how many of the first hidden layers are Linear -> BN -> activation (0 to
        `len(hidden)`; default 0, no BN).
      dropout: drop rate after each hidden activation (0.0: none).
      num_classes: output size (default 10).
      variant: "mnist" only (the input shape is free; MNIST is what it is sized for).
      axis_name: passed to every BatchNorm.
    Returns: an `MLP` module; `__call__(x, *, train, mask=None)` maps `[N, ...]` to `[N, num_classes]`.
    Raises:
      TypeError: `hidden` not a sequence of ints, `batch_norm_layers` or `num_classes` not an int, `dropout`
        not a real number (a bool is none of these).
      ValueError: an unknown variant or activation, an empty `hidden` or a width < 1, `batch_norm_layers`
        outside [0, len(hidden)], `num_classes` < 1, `dropout` outside [0, 1).
    """
    check_variant("mlp", variant, ("mnist",))
    if not isinstance(hidden, Sequence) or isinstance(hidden, str):
        raise TypeError(f"mlp: hidden must be a sequence of ints such as (512, 256), got {type(hidden).__name__} "
                        f"{hidden!r}.")
    if not hidden:
        raise ValueError(f"mlp: hidden must be a non-empty sequence of positive ints, got {tuple(hidden)!r}.")
    hidden = tuple(check_positive_int("mlp", f"hidden[{i}]", h) for i, h in enumerate(hidden))
    check_int("mlp", "batch_norm_layers", batch_norm_layers, minimum=0, maximum=len(hidden))
    check_rate("mlp", "dropout", dropout)
    get_activation(activation)  # unknown names fail here, at creation
    return MLP(hidden=hidden, num_classes=default_classes("mlp", num_classes, variant), activation=activation,
               batch_norm_layers=batch_norm_layers, dropout=dropout, axis_name=axis_name)
