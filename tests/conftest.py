import os

# The suite is compile-bound (thousands of small programs): LLVM's optimisation level 0 compiles them in less
# CPU time. Results stay within float rounding of XLA's default level, not bitwise (LLVM contracts and
# vectorises differently); every check here compares programs compiled alike, or with a stated tolerance.
# .ci/deps_smoke.py runs with XLA's defaults; JAXNETS_TEST_XLA_DEFAULTS=1 runs the suite with them too.
if not os.environ.get("JAXNETS_TEST_XLA_DEFAULTS") and "xla_backend_optimization_level" not in os.environ.get(
        "XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import jax
import numpy as np
import pytest
import torch

jax.config.update("jax_default_matmul_precision", "highest")
# Strict dtype promotion for the whole suite: an implicit promotion (bfloat16 + float32, int + float) is an
# error, so "at least float32" must be written with checks.at_least_float32, never left to jnp's rules.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Parity tests use tiny tensors: one thread per pytest worker is faster than oversubscribing the cores.
torch.set_num_threads(1)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def x64():
    """Enable float64 for one test, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)
