"""`Flatten`: Flax wrapper of `layers.flatten`."""
import flax.linen as nn
import jax

from jaxnets.layers.reshape import flatten


class Flatten(nn.Module):
    """Flatten all but the batch axis in PyTorch's `(C, *spatial)` order; calls `layers.flatten`.

    Because the order is PyTorch's for every layout, a `Dense` after it takes a ported `nn.Linear`
    weight (transposed) with no permutation.
    `__call__(x)`: `[N, *spatial, C]` -> `[N, C * prod(spatial)]`.
    PyTorch: `torch.nn.Flatten()` on the NCHW tensor.
    """

    layout: str = "NHWC"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return flatten(x, layout=self.layout)
