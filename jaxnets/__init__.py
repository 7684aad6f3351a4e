"""jaxnets: a functional neural-network library on JAX with numerical parity to PyTorch.

Imports point one way: layers, init <- nn <- models <- train. `jaxnets.summary` reports per-layer cost;
`jaxnets.jit` is `jax.jit` with the compiler options jaxnets uses for its own programs.
"""
from jaxnets import data, init, layers, models, nn, train
from jaxnets.compile import jit
from jaxnets.cost import summary

__version__ = "0.1.0"
