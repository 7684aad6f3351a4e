"""`Dropout`: Flax wrapper of `layers.dropout`."""
import flax.linen as nn
import jax

from jaxnets.layers.dropout import dropout


class Dropout(nn.Module):
    """Zero each element with probability `rate` and scale the rest by `1 / (1 - rate)`; calls `layers.dropout`.

    Attributes: `rate`, the probability of DROPPING an element, in [0, 1): a float, or a scalar array
      that may be traced (`layers.dropout`).
    `__call__(x, *, train)`: with `train=True` and `rate > 0` the key comes from the "dropout" RNG stream
      (`self.make_rng("dropout")`, so `apply(..., rngs={"dropout": key})` is required); otherwise `x` is
      returned unchanged and no key is drawn.
    Raises: ValueError (from `layers.dropout`) for a rate outside [0, 1), in either mode.
    PyTorch: `torch.nn.Dropout(p=rate)`.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # Draw a key only when it is used, so eval (and rate 0) needs no "dropout" stream; an array rate
        # (e.g. traced: one rate per member of a vmapped population) always draws one.
        drawn = train is True and (isinstance(self.rate, jax.Array) or
                                   (isinstance(self.rate, (int, float)) and 0 < self.rate < 1))
        key = self.make_rng("dropout") if drawn else None  # bad rates/trains are reported by layers.dropout
        return dropout(key, x, self.rate, train=train)
