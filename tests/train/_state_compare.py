"""Bitwise comparison of two `TrainState`s, shared by the checkpoint and fit tests."""
import jax
import numpy as np

from jaxnets.train.checkpoint import STATE_FIELDS
from jaxnets.train.state import TrainState


def state_leaves(state: TrainState) -> list[np.ndarray]:
    """Every array of the state's pytree fields as numpy (typed PRNG keys as their raw key data)."""
    out = []
    for name in STATE_FIELDS:
        for leaf in jax.tree.leaves(getattr(state, name)):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            out.append(np.asarray(leaf))
    return out


def assert_bitwise_equal(a: TrainState, b: TrainState) -> None:
    """Same tree structure, dtypes, shapes and bits; `apply_fn` (static) may differ between model objects."""
    for name in STATE_FIELDS:
        assert jax.tree.structure(getattr(a, name)) == jax.tree.structure(getattr(b, name)), name
    for x, y in zip(state_leaves(a), state_leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
