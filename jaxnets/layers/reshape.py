"""Reshapes between convolutional and dense parts of a network."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxnets.checks import check_array, is_channels_last


def flatten(x: jax.Array, *, layout: str = "NHWC") -> jax.Array:
    """Flatten every axis but the batch axis, in PyTorch's channels-first order `(C, *spatial)`.

    `[N, *spatial, C]` (channels-last) is first transposed to `[N, C, *spatial]`, so that for ANY layout
    the result equals `torch.flatten(x_nchw, 1)`: a `linear` layer after it takes a ported PyTorch
    `nn.Linear` weight (transposed to `[in, out]`) unchanged, with no permutation of its input features.

    Args:
      x: `[N, *spatial, C]` (default) or `[N, C, *spatial]` with `layout="NCHW"` etc.; a 2-D `[N, F]`
        input is returned unchanged.
      layout: where the channels are (only the channels-last/first distinction matters).
    Returns: `[N, C * prod(spatial)]`.
    Raises: ValueError for an input of rank < 2 or an unknown layout; TypeError for a non-array `x` or a
      non-string layout.

    PyTorch: `torch.flatten(x, 1)` / `nn.Flatten()` on the NCHW tensor.
    """
    x = jnp.asarray(check_array("flatten", "x", x))
    channels_last = is_channels_last("flatten", layout)
    if x.ndim < 2:
        raise ValueError(f"flatten: expected a batched input [N, ...] of rank >= 2, got shape {tuple(x.shape)}.")
    if channels_last and x.ndim > 2:
        x = jnp.moveaxis(x, -1, 1)  # channels-first order, as PyTorch flattens
    return x.reshape(x.shape[0], -1)
