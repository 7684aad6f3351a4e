"""Initializers: factories returning `init(key, shape, dtype=jnp.float32)`, usable as Flax `kernel_init`.

Kernel shapes are named by `kernel_layout` (`"HWIO"` family by default, `"OIHW"` for PyTorch's), never by
`layout`, which in this library means an ACTIVATION layout; `layout=` still works for one release.
"""
from jaxnets.init.fans import calculate_gain, compute_fans
from jaxnets.init.initializers import (he_normal, he_uniform, lecun_normal, lecun_uniform, normal, ones,
                                       pytorch_default, pytorch_default_bias, uniform, variance_scaling,
                                       xavier_normal, xavier_uniform, zeros)

__all__ = [
    "calculate_gain", "compute_fans", "he_normal", "he_uniform", "lecun_normal", "lecun_uniform", "normal", "ones",
    "pytorch_default", "pytorch_default_bias", "uniform", "variance_scaling", "xavier_normal", "xavier_uniform",
    "zeros",
]
