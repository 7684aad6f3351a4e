"""Initializers: factories returning ``init(key, shape, dtype=jnp.float32)``, usable as Flax ``kernel_init``."""
from jaxnets.init.fans import calculate_gain, compute_fans
from jaxnets.init.initializers import (he_normal, he_uniform, lecun_normal, lecun_uniform, ones, pytorch_default,
                                       pytorch_default_bias, variance_scaling, xavier_normal, xavier_uniform, zeros)
