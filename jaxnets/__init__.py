"""jaxnets: a functional neural-network library on JAX with numerical parity to PyTorch.

Imports point one way: layers, init <- nn <- models <- train. `jaxnets.summary` reports per-layer cost.
"""
from jaxnets import data, init, layers, models, nn, train
from jaxnets.cost import summary

__version__ = "0.1.0"
