"""Subprocess of tests/data/test_pipeline.py: one of two JAX processes reading a Loader together.

Usage: python _pipeline_worker.py PROCESS_ID NUM_PROCESSES PORT DATA_DIR OUT_DIR
Joins the run on 127.0.0.1:PORT (one CPU device each), reads epochs 0 and 1 of a `Loader` over
DATA_DIR/{x,y}.npy (global batch 8, random flips) and writes OUT_DIR/process<ID>.npz: its batches, and every
example index its source was asked for (to check that it reads only its shard). It also assembles one
sharded global batch over both processes' devices and saves this process's shard of it.
"""
import sys
import threading

from jaxnets.train import distributed

BATCH, SEED, EPOCHS = 8, 5, 2


def main(process_id: int, num_processes: int, port: int, data_dir: str, out_dir: str) -> None:
    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=120)
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxnets import data

    class Recording(data.ArraySource):
        """An ArraySource that records the indices it is asked for (reading threads included)."""

        def __init__(self, *args):
            super().__init__(*args)
            self.read, self.lock = [], threading.Lock()

        def __getitem__(self, index):
            with self.lock:
                self.read.append(int(index))
            return super().__getitem__(index)

    assert jax.process_count() == num_processes and jax.process_index() == process_id
    source = Recording(f"{data_dir}/x.npy", f"{data_dir}/y.npy")
    loader = data.Loader(source, BATCH, seed=SEED, transforms=[data.transforms.RandomHorizontalFlip()],
                         read_threads=2)
    out = {}
    for epoch in range(EPOCHS):
        with loader.epoch(epoch) as it:
            batches = list(it)
        out[f"image{epoch}"] = np.stack([b["image"] for b in batches])
        out[f"label{epoch}"] = np.stack([b["label"] for b in batches])
    loader.close()  # stops the threads reading epoch 2 ahead
    out["read"] = np.array(source.read)
    mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    sharded = data.Loader(source, BATCH, seed=SEED, sharding=NamedSharding(mesh, PartitionSpec("batch")))
    with sharded.epoch(0) as it:
        batch = next(it)
    assert batch["image"].shape == (BATCH,) + source.images.shape[1:], batch["image"].shape
    out["sharded_label"] = np.asarray(batch["label"].addressable_data(0))
    np.savez(f"{out_dir}/process{process_id}.npz", **out)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
