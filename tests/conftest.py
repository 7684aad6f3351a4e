import jax
import numpy as np
import pytest
import torch

jax.config.update("jax_default_matmul_precision", "highest")
# Parity tests use tiny tensors: one thread per pytest worker is faster than oversubscribing the cores.
torch.set_num_threads(1)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
