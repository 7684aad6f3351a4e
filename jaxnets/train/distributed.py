"""Many processes (hosts), one training run: start-up, which rows each process loads, metric reduction.

A multi-process run is the "sharded" (or "shard_map") mode of `compile_steps` over the devices of all
processes. Every process runs the same program on the same replicated state; each loads only its own
rows of every global batch and `CompiledSteps.put_batch` assembles the global array from the
processes' parts (`jax.make_array_from_process_local_data`). Inside the compiled step everything is
global: the loss mean, the gradient, the BatchNorm statistics and the metric sums cover the global
batch, so every process holds the same new state and the same metrics. Only process 0 writes logs
and checkpoints (`is_main_process()`).

    distributed.initialize("10.0.0.1:1234", num_processes=2, process_id=rank)   # first, before any JAX op
    steps = compile_steps("sharded")                                          # mesh over all processes' devices
    state = steps.put_state(TrainState.create(model, tx, sample, seed))      # same seed everywhere
    for batch in global_batches:                    # B rows (the last may have fewer); better: load only the slice
        rows = distributed.process_slice(len(batch["label"]))
        local = {k: v[rows] for k, v in batch.items()}
        state, metrics = steps.train(state, steps.put_batch(local, global_batch_size=B))
    if distributed.is_main_process():
        print(distributed.allreduce_metrics(metrics))                          # global sums as numpy

PyTorch: `torch.distributed.init_process_group` + `DistributedSampler` + `DistributedDataParallel`.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxnets.checks import check_positive_int
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_count: int | None = None,
               cpu_collectives: str = "gloo", initialization_timeout: int = 300, **options) -> None:
    """Join a multi-process run: `jax.distributed.initialize` with CPU collectives configured.

    Must be called in every process before any JAX computation (the backend is configured by it).
    On a cluster JAX detects the arguments (SLURM, Kubernetes, cloud TPU); on plain machines pass them.

    Args:
      coordinator_address: "host:port" of process 0, which runs the coordination service.
      num_processes: total number of processes.
      process_id: this process's index in [0, num_processes).
      local_device_count: number of CPU devices this process exposes (`jax_num_cpu_devices`), e.g. 2
        to simulate two devices per host on CPU; None leaves the platform's default (one CPU device;
        accelerators are unaffected).
      cpu_collectives: implementation of cross-process collectives between CPU devices ("gloo", or
        "mpi"), set through `jax_cpu_collectives_implementation`.
      initialization_timeout: seconds to wait for all processes to connect.
      **options: passed on to `jax.distributed.initialize` (e.g. `local_device_ids`).
    Raises:
      TypeError/ValueError: `local_device_count` not a positive int.
      RuntimeError: JAX has already run a computation in this process (from JAX), or the processes
        cannot connect within the timeout.
    """
    fn = "initialize"
    if local_device_count is not None:
        check_positive_int(fn, "local_device_count", local_device_count)
        try:
            jax.config.update("jax_num_cpu_devices", local_device_count)
        except RuntimeError as e:
            raise RuntimeError(f"{fn}: must be called before any JAX computation in this process "
                               f"(the CPU device count is fixed when the backend starts): {e}") from e
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               initialization_timeout=initialization_timeout, **options)


def shutdown() -> None:
    """Leave the multi-process run (`jax.distributed.shutdown`); a no-op if it was never initialised."""
    jax.distributed.shutdown()


def is_main_process() -> bool:
    """True in process 0, the one process that writes logs, history files and checkpoints."""
    return jax.process_index() == 0


def process_slice(global_batch_size: int, *, process_index: int | None = None,
                  process_count: int | None = None) -> slice:
    """The rows of a global batch that this process loads: a contiguous block, balanced over processes.

    Process `p` of `P` gets rows `[start(p), start(p + 1))` with `start(p) = p * (N // P) + min(p, N % P)`:
    the first `N % P` processes hold one row more. These are the rows its devices hold in the mesh of
    `compile_steps` (devices ordered by process); pass the nominal `global_batch_size` to `put_batch`
    so every process pads to the same size when the shares differ.

    Args:
      global_batch_size: `N`, rows in the global batch, >= 1.
      process_index, process_count: default `jax.process_index()`, `jax.process_count()`.
    Returns: a `slice` to index the global batch's arrays with.
    Raises: TypeError/ValueError for a non-int or non-positive `global_batch_size`, or a process index
      outside [0, process_count).
    PyTorch: `DistributedSampler(..., num_replicas=P, rank=p)` (which interleaves rows instead).
    """
    fn = "process_slice"
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    check_positive_int(fn, "global_batch_size", global_batch_size)
    if not (isinstance(count, int) and count >= 1 and isinstance(p, int) and 0 <= p < count):
        raise ValueError(f"{fn}: process_index must be in [0, process_count), got process_index={p!r}, "
                         f"process_count={count!r}.")
    base, extra = divmod(int(global_batch_size), count)
    start = p * base + min(p, extra)
    return slice(start, start + base + (p < extra))


def allreduce_metrics(metrics):
    """Metric sums over all processes, as host numpy values (the same in every process).

    - Global arrays (outputs of `CompiledSteps.train`/`eval` in a multi-process run) are already the
      global sums, computed inside the compiled step: they are only fetched, not summed again.
    - Host-local values (numpy numbers, or single-process arrays computed from this process's rows
      only) are summed over the processes (`multihost_utils.process_allgather`, a collective: every
      process must call this with the same structure).
    In a single process this is just the host copy of `metrics`.

    Args:
      metrics: a pytree (usually `{"loss", "correct", "count"}`) of scalars or arrays.
    Returns: the same pytree of numpy arrays.
    Raises: ValueError for a global array that is sharded rather than replicated (not a metric sum).
    """
    leaves, tree = jax.tree.flatten(metrics)
    out, local_index = [None] * len(leaves), []
    for i, x in enumerate(leaves):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError(f"allreduce_metrics: leaf {i} is a global array sharded as {x.sharding}; "
                                 f"expected replicated metric sums (as the compiled steps return).")
            out[i] = np.asarray(x.addressable_data(0))
        else:
            local_index.append(i)
    local = [np.asarray(leaves[i]) for i in local_index]
    if local and jax.process_count() > 1:
        local = [np.sum(g, axis=0) for g in multihost_utils.process_allgather(local)]
    for i, value in zip(local_index, local):
        out[i] = value
    return jax.tree.unflatten(tree, out)
