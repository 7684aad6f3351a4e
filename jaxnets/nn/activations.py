"""Activation modules (no parameters), usable inside `Sequential` or `flax.linen.Sequential`.

Each calls the matching function of `layers.activations`.
"""
import warnings

import flax.linen as nn
import jax

from jaxnets.layers import activations as act


class ReLU(nn.Module):
    """`max(x, 0)`; calls `layers.relu`. PyTorch: `torch.nn.ReLU()`."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.relu(x)


class LeakyReLU(nn.Module):
    """`x` if `x > 0` else `negative_slope * x`; calls `layers.leaky_relu`.
    PyTorch: `torch.nn.LeakyReLU(negative_slope)`."""

    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.leaky_relu(x, negative_slope=self.negative_slope)


class ELU(nn.Module):
    """`x` if `x > 0` else `alpha * (exp(x) - 1)`; calls `layers.elu`. PyTorch: `torch.nn.ELU(alpha)`."""

    alpha: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.elu(x, alpha=self.alpha)


class Sigmoid(nn.Module):
    """`1 / (1 + exp(-x))`; calls `layers.sigmoid`. PyTorch: `torch.nn.Sigmoid()`."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.sigmoid(x)


class Tanh(nn.Module):
    """`tanh(x)`; calls `layers.tanh`. PyTorch: `torch.nn.Tanh()`."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.tanh(x)


class Maxout(nn.Module):
    """Maximum over `pieces` consecutive channels (size `C` -> `C / pieces`); calls `layers.maxout`.

    Attributes: `pieces`; `layout` ("NHWC" default: channels last, also for `[N, C]`; "NCHW" etc.: axis 1);
      `axis`, deprecated (a DeprecationWarning; removed in the next release): use `layout`.
    PyTorch: no module; `x.unflatten(axis, (C // pieces, pieces)).amax(axis + 1)`."""

    pieces: int
    layout: str = "NHWC"
    axis: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.axis is None:
            return act.maxout(x, self.pieces, layout=self.layout)
        with warnings.catch_warnings():  # one warning, naming the module's field, not two
            warnings.simplefilter("ignore", DeprecationWarning)
            y = act.maxout(x, self.pieces, axis=self.axis)
        warnings.warn("Maxout: the field axis is deprecated and will be removed in the next release; pass "
                      "layout= ('NHWC' for the last axis, 'NCHW' for axis 1).", DeprecationWarning, stacklevel=2)
        return y


class LogSoftmax(nn.Module):
    """Log-probabilities along `axis` (last by default); calls `layers.log_softmax`.

    PyTorch: `torch.nn.LogSoftmax(dim=axis)`."""

    axis: int = -1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.log_softmax(x, axis=self.axis)


class Activation(nn.Module):
    """An activation chosen by name through `layers.get_activation` ("relu", "leaky_relu", "elu", "sigmoid",
    "tanh", "identity", "gelu", "softplus", "silu"), with that function's default options.

    Usage: `Activation("gelu")`. The field is `function`, not `name`, because Flax reserves `name` for the
    submodule name.

    Raises: ValueError (from `layers.get_activation`) for an unknown name.
    PyTorch: the module of the same name (`torch.nn.ReLU()`, `torch.nn.GELU()`, `torch.nn.Identity()`, ...).
    """

    function: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return act.get_activation(self.function)(x)
