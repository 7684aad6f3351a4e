"""jaxnets: a functional neural-network library on JAX with numerical parity to PyTorch."""
from jaxnets import init, layers

__version__ = "0.1.0"
