"""Shared by the model tests: variables without compiling `init`, and the fast-compile XLA options."""
import flax
import jax
import jax.numpy as jnp
import numpy as np

# Compile the big training-step graphs at XLA's lowest optimisation level: the tests check numerics and
# shapes, not speed, and this roughly halves compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def random_variables(model, x, rng):
    """Variables for `model` without running (or compiling) its init: kernels He normal (fan_in), biases 0,
    BN scale 1, shift 0, running mean 0, variance 1 (compiling GoogLeNet's init, 114 random draws, takes ~40 s)."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    def draw(path, leaf):
        if path[-1].key == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * np.sqrt(2.0 / fan_in))
        return jnp.ones(leaf.shape) if path[-1].key in ("scale", "var") else jnp.zeros(leaf.shape)

    return jax.tree_util.tree_map_with_path(draw, flax.core.unfreeze(shapes))
