"""Subprocess of tests/train/test_distributed.py: one of several processes training together.

Usage: python _distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR
Joins the run on 127.0.0.1:PORT with 2 CPU devices, trains `STEPS` in the "sharded" mode over all
processes' devices, loading only this process's rows of every global batch, and writes
OUT_DIR/process<ID>.npz: the final params and batch_stats, the reduced train metrics per step, the
reduction of a host-local value (this process's row count) and whether this is the main process.
"""
import os
import sys

from jaxnets.train import distributed

# Global batch sizes; 15 splits 8 + 7 rows, padded to 8 + 8 (put_batch with global_batch_size=16 gives
# every batch 8 rows per process and a mask, so all steps share one compiled program).
SIZES = [16, 16, 15, 16, 16]


def main(process_id: int, num_processes: int, port: int, out_dir: str) -> None:
    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id, local_device_count=2,
                           initialization_timeout=120)
    import jax
    import numpy as np

    import _tiny
    from jaxnets.train.parallel import compile_steps

    jax.config.update("jax_default_matmul_precision", "highest")  # as tests/conftest.py
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (num_processes, 2 * num_processes, 2)
    steps = compile_steps()
    assert steps.mode == "sharded" and steps.num_devices == 2 * num_processes, steps
    state = steps.put_state(_tiny.new_state())
    metrics, local_rows = [], []
    for size, batch in zip(SIZES, _tiny.data(len(SIZES), 16, seed=1)):
        rows = distributed.process_slice(size)
        local = {k: v[:size][rows] for k, v in batch.items()}
        state, m = steps.train(state, steps.put_batch(local, global_batch_size=16))
        metrics.append(distributed.allreduce_metrics(m))
        local_rows.append(distributed.allreduce_metrics({"rows": np.int32(rows.stop - rows.start)})["rows"])
    out = _tiny.to_numpy(steps.get_state(state))
    for name in ("loss", "correct", "count"):
        out[f"metrics/{name}"] = np.array([m[name] for m in metrics])
    out["local_rows_sum"] = np.array(local_rows)
    out["is_main"] = np.array(distributed.is_main_process())
    np.savez(os.path.join(out_dir, f"process{process_id}.npz"), **out)
    distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
