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


# Tests that start subprocesses, in files whose tests cannot carry the decorator yet: marked `slow` here,
# as `@pytest.mark.slow` would (see [tool.pytest.ini_options] markers). {file name: test functions}.
SLOW_SUBPROCESS_TESTS = {
    "test_parallel.py": ("test_mode_matches_one_device", "test_training_moved_the_state",
                         "test_padding_without_mask_would_differ", "test_put_batch_pads_to_the_devices",
                         "test_cpu_compiler_options_equal_the_xla_flag"),
    "test_cli.py": ("test_smoke_run_in_a_subprocess", "test_resume_continues_the_run"),
    "test_batches.py": ("test_sharding_on_8_simulated_devices",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = SLOW_SUBPROCESS_TESTS.get(item.path.name, ())
        missing = [n for n in names if not hasattr(item.module, n)]
        if missing:  # a renamed test must not silently leave the fast loop slow
            raise pytest.UsageError(f"tests/conftest.py: SLOW_SUBPROCESS_TESTS names {missing} that "
                                    f"{item.path.name} does not define; update the list.")
        if item.originalname in names:
            item.add_marker(pytest.mark.slow)
