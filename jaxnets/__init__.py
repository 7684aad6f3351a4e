"""jaxnets: a functional neural-network library on JAX with numerical parity to PyTorch.

Imports point one way: layers, init <- nn <- models <- train. `jaxnets.summary` reports per-layer cost;
`jaxnets.jit` is `jax.jit` with the compiler options jaxnets uses for its own programs.
"""
import importlib

__version__ = "0.1.0"

# Sub-packages and names imported on first use (PEP 562): `import jaxnets` is cheap, and a process that needs
# one module (a data Loader's worker process: numpy and Pillow only) does not import jax, flax and optax.
_SUBPACKAGES = ("data", "init", "layers", "models", "nn", "train")
_NAMES = {"jit": "jaxnets.compile", "summary": "jaxnets.cost"}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBPACKAGES) | set(_NAMES))
