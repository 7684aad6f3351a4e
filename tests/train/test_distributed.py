"""Tests of jaxnets/train/distributed.py: a real two-process run on loopback, and the helpers.

Two processes (`_distributed_worker.py`) join on 127.0.0.1, each with 2 CPU devices (gloo collectives),
and train 5 steps of a BN ResNet in the "sharded" mode over the 4 global devices, each loading only its
rows of every global batch; the result must match one process on one device to 1e-5 (rtol and atol:
float32 sums over the batch in another order, across devices and processes; observed ~1e-6).
"""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import _tiny
from _distributed_worker import SIZES
from _tolerances import FLOAT32
from jaxnets.train import distributed
from jaxnets.train.parallel import compile_steps

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
TOL = FLOAT32
TIMEOUT_S = 600  # whole run, both processes; they are killed after it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               # One CPU device per process unless initialize() says otherwise (no forced device count);
               # optimisation level 0 halves the compile time (the step's numerics are what is checked).
               XLA_FLAGS="--xla_backend_optimization_level=0")
    port, procs, logs = free_port(), [], []
    try:
        for i in range(2):
            logs.append(open(out / f"process{i}.log", "w"))
            procs.append(subprocess.Popen([sys.executable, str(HERE / "_distributed_worker.py"), str(i), "2",
                                           str(port), str(out)], cwd=HERE, env=env, stdout=logs[i],
                                          stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIMEOUT_S
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{(out / f'process{i}.log').read_text()[-4000:]}"
    results = []
    for i in range(2):
        with np.load(out / f"process{i}.npz") as f:
            results.append(dict(f))
    return results


@pytest.fixture(scope="module")
def reference():
    """One process, one device, the same global batches (unpadded)."""
    steps = compile_steps("none")
    state, losses = steps.put_state(_tiny.new_state()), []
    for size, batch in zip(SIZES, _tiny.data(len(SIZES), 16, seed=1)):
        state, metrics = steps.train(state, steps.put_batch({k: v[:size] for k, v in batch.items()}))
        losses.append(float(metrics["loss"]))
    return dict(_tiny.to_numpy(state), **{"metrics/loss": np.array(losses)})


@pytest.mark.slow  # two processes
@pytest.mark.parametrize("process", [0, 1])
def test_two_processes_match_one_device(processes, reference, process):
    got = processes[process]
    for k in (k for k in reference if not k.startswith("metrics/")):
        np.testing.assert_allclose(got[k], reference[k], **TOL, err_msg=f"process {process}: {k}")
    # Metrics are the global sums, identical in both processes.
    np.testing.assert_array_equal(got["metrics/count"], SIZES)
    np.testing.assert_allclose(got["metrics/loss"], reference["metrics/loss"], **TOL)
    np.testing.assert_array_equal(got["metrics/correct"], processes[0]["metrics/correct"])


@pytest.mark.slow  # two processes
def test_host_local_values_are_summed_over_processes(processes):
    """allreduce_metrics sums host-local values (each process's row count) and only fetches global ones."""
    for result in processes:
        np.testing.assert_array_equal(result["local_rows_sum"], SIZES)


@pytest.mark.slow  # two processes
def test_only_process_0_is_main(processes):
    assert [bool(r["is_main"]) for r in processes] == [True, False]


# ---- helpers in one process ----

@pytest.mark.parametrize("n, count", [(16, 2), (15, 2), (7, 3), (2, 4), (1, 1)])
def test_process_slice_is_contiguous_and_balanced(n, count):
    slices = [distributed.process_slice(n, process_index=p, process_count=count) for p in range(count)]
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_process_slice_defaults_to_this_process():
    assert distributed.process_slice(10) == slice(0, 10)


def test_process_slice_errors():
    with pytest.raises(ValueError, match=r"process_slice: global_batch_size must be an int >= 1, got 0"):
        distributed.process_slice(0)
    with pytest.raises(TypeError, match=r"process_slice: global_batch_size must be an int >= 1, got float 2.5"):
        distributed.process_slice(2.5)
    with pytest.raises(ValueError, match=r"process_slice: process_index must be in \[0, process_count\), got "
                                         r"process_index=2, process_count=2"):
        distributed.process_slice(8, process_index=2, process_count=2)


def test_single_process_helpers():
    assert distributed.is_main_process()
    metrics = {"loss": jax.numpy.float32(2.5), "count": np.int32(4)}
    reduced = distributed.allreduce_metrics(metrics)
    assert isinstance(reduced["loss"], np.ndarray) and float(reduced["loss"]) == 2.5 and int(reduced["count"]) == 4


def test_initialize_errors():
    jax.devices()  # the backend is running in this process
    with pytest.raises(RuntimeError, match=r"initialize: must be called before any JAX computation"):
        distributed.initialize("127.0.0.1:1", 2, 0, local_device_count=2)
    with pytest.raises(ValueError, match=r"initialize: local_device_count must be an int >= 1, got 0"):
        distributed.initialize(local_device_count=0)
    with pytest.raises(TypeError, match=r"initialize: local_device_count must be an int >= 1, got str '2'"):
        distributed.initialize(local_device_count="2")
