"""Initializers: factories returning ``init(key, shape, dtype=jnp.float32)``, usable as Flax ``kernel_init``."""
