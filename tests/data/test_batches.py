"""Tests for jaxnets/data/batches.py: epoch order, drop_last, multi-host slicing, prefetching without leaked
threads, sharding on 8 simulated devices and on 2 real processes (subprocesses)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxnets.data import Batches, mnist_sample

REPO = Path(__file__).resolve().parents[2]


def make_arrays(n=10):
    return {"image": np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1), "label": np.arange(n, dtype=np.int32)}


def collect(iterator):
    return [{key: np.asarray(value) for key, value in batch.items()} for batch in iterator]


def ids(batches):
    return [batch["label"].tolist() for batch in batches]


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("jaxnets-Batches")]


# ------------------------------------------------------------------------------------------------
# Order


@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_example_once_per_epoch(prefetch):
    arrays = make_arrays(10)
    batches = Batches(arrays, 3, drop_last=False, prefetch=prefetch)
    assert len(batches) == 4
    for epoch in range(3):
        got = collect(batches.epoch(epoch))
        assert [len(b["label"]) for b in got] == [3, 3, 3, 1]
        assert sorted(sum(ids(got), [])) == list(range(10))
        for batch in got:  # rows of different arrays stay together
            np.testing.assert_array_equal(batch["image"], arrays["image"][batch["label"]])
            assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32


def test_drop_last():
    batches = Batches(make_arrays(10), 3, drop_last=True)
    assert len(batches) == 3
    got = ids(collect(batches.epoch(0)))
    assert [len(b) for b in got] == [3, 3, 3] and len(set(sum(got, []))) == 9
    np.testing.assert_array_equal(sum(got, []), batches.order(0)[:9])  # the dropped example is the last one
    assert len(Batches(make_arrays(10), 5, drop_last=True)) == 2
    assert len(Batches(make_arrays(10), 12, drop_last=False)) == 1


def test_order_depends_only_on_seed_and_epoch():
    arrays = make_arrays(50)
    a = Batches(arrays, 5, seed=3, prefetch=0)
    b = Batches(arrays, 5, seed=3, prefetch=3)
    assert ids(collect(a.epoch(4))) == ids(collect(b.epoch(4)))  # a fresh object: same batches (resume)
    assert ids(collect(a.epoch(4))) == ids(collect(a.epoch(4)))
    assert ids(collect(a.epoch(0))) != ids(collect(a.epoch(1)))
    assert ids(collect(a.epoch(0))) != ids(collect(Batches(arrays, 5, seed=4).epoch(0)))
    np.testing.assert_array_equal(a.order(7), np.random.default_rng([3, 7]).permutation(50))
    assert ids(collect(Batches(arrays, 5, shuffle=False).epoch(3)))[:2] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_iter_walks_through_successive_epochs():
    batches = Batches(make_arrays(12), 4, seed=1)
    first, second = collect(batches), collect(batches)
    assert ids(first) == ids(collect(batches.epoch(0))) and ids(second) == ids(collect(batches.epoch(1)))
    assert batches.next_epoch == 2
    batches.next_epoch = 9
    assert ids(collect(batches)) == ids(collect(batches.epoch(9)))


def test_on_the_mnist_sample():
    sample = mnist_sample()
    batches = Batches(sample, 128, seed=0)
    assert len(batches) == 5000 // 128
    batch = next(iter(batches.epoch(0)))
    assert batch["image"].shape == (128, 28, 28, 1) and batch["image"].dtype == np.uint8
    assert batch["image"].flags.writeable  # a copy, not a view of the read-only sample


# ------------------------------------------------------------------------------------------------
# Multi-host slicing (simulated with process_index / process_count)


@pytest.mark.parametrize("drop_last", [True, False])
def test_process_slices_make_up_the_global_batch(drop_last):
    arrays = make_arrays(22)  # with batch 8 and drop_last=False the last global batch has 6 examples
    whole = collect(Batches(arrays, 8, seed=5, drop_last=drop_last, process_index=0, process_count=1).epoch(2))
    parts = [Batches(arrays, 8, seed=5, drop_last=drop_last, process_index=p, process_count=2) for p in range(2)]
    assert parts[0].local_batch_size == 4 and len(parts[0]) == len(whole)
    slices = [collect(part.epoch(2)) for part in parts]
    for b, global_batch in enumerate(whole):
        for key in arrays:
            local = [slices[p][b][key] for p in range(2)]
            assert len(local[0]) == len(local[1]) == len(global_batch[key]) // 2
            np.testing.assert_array_equal(np.concatenate(local), global_batch[key])


# ------------------------------------------------------------------------------------------------
# Prefetching


def test_prefetch_runs_ahead():
    iterator = Batches(make_arrays(40), 2, prefetch=3).epoch(0)
    next(iterator)
    deadline = time.monotonic() + 10
    while iterator._queue.qsize() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert iterator._queue.qsize() == 3
    iterator.close()


def test_stopping_early_leaves_no_thread():
    batches = Batches(make_arrays(40), 2, prefetch=2)
    assert prefetch_threads() == []
    for i, _ in enumerate(batches.epoch(0)):
        if i == 1:
            assert len(prefetch_threads()) == 1
            break
    assert prefetch_threads() == []  # the abandoned iterator was collected and its thread joined
    iterator = batches.epoch(1)
    next(iterator)
    thread = iterator._thread
    iterator.close()
    assert not thread.is_alive()
    with pytest.raises(StopIteration):
        next(iterator)
    with batches.epoch(2) as iterator:
        next(iterator)
    assert prefetch_threads() == []
    collect(batches.epoch(3))  # a complete epoch ends its thread too
    assert prefetch_threads() == []


def test_errors_in_the_producer_reach_the_consumer(monkeypatch):
    batches = Batches(make_arrays(10), 2, prefetch=2)
    calls = []

    def failing_place(self, batch, size):
        calls.append(size)
        if len(calls) == 2:
            raise RuntimeError("transfer failed")
        return batch

    monkeypatch.setattr(Batches, "_place", failing_place)
    iterator = batches.epoch(0)
    next(iterator)
    with pytest.raises(RuntimeError, match="transfer failed"):
        next(iterator)
    with pytest.raises(StopIteration):
        next(iterator)
    assert prefetch_threads() == []


# ------------------------------------------------------------------------------------------------
# Placement


def test_single_device_sharding_gives_device_arrays():
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    arrays = make_arrays(12)
    placed = list(Batches(arrays, 4, seed=2, sharding=sharding).epoch(0))
    host = collect(Batches(arrays, 4, seed=2).epoch(0))
    for got, want in zip(placed, host):
        assert isinstance(got["image"], jax.Array) and got["image"].sharding == sharding
        np.testing.assert_array_equal(np.asarray(got["image"]), want["image"])
    one = Batches.for_devices(arrays, 4)
    assert one.sharding.mesh.axis_names == ("batch",) and one.sharding.spec == jax.sharding.PartitionSpec("batch")


def python_process(script, *args, xla_flags):
    """Start ``python -c script *args`` on the CPU backend with the given XLA_FLAGS (a fresh JAX)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO), "XLA_FLAGS": xla_flags}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


SHARDED_8 = """
    import json
    import jax, numpy as np
    from jax.sharding import PartitionSpec
    from jaxnets.data import Batches

    arrays = {"image": np.arange(40 * 3 * 2 * 1, dtype=np.float32).reshape(40, 3, 2, 1),
              "label": np.arange(40, dtype=np.int32)}
    sharded = Batches.for_devices(arrays, 16, seed=3, drop_last=False)
    reference = Batches(arrays, 16, seed=3, drop_last=False)
    report = {"devices": len(jax.devices()), "batches": 0, "errors": []}
    for got, want in zip(sharded.epoch(1), reference.epoch(1)):
        report["batches"] += 1
        for key in arrays:
            x = got[key]
            assert isinstance(x, jax.Array) and x.shape == want[key].shape, (key, x.shape)
            assert x.sharding == sharded.sharding and x.sharding.spec == PartitionSpec("batch"), x.sharding
            shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start)
            per = len(want[key]) // 8
            assert [s.device for s in shards] == jax.devices()
            for i, shard in enumerate(shards):
                assert shard.data.shape == (per,) + want[key].shape[1:]
                np.testing.assert_array_equal(np.asarray(shard.data), want[key][i * per:(i + 1) * per])
    four = Batches.for_devices(arrays, 8, devices=jax.devices()[4:])
    batch = next(iter(four.epoch(0)))
    assert {s.device for s in batch["label"].addressable_shards} == set(jax.devices()[4:])
    for n, size, drop_last in ((40, 12, True), (36, 16, False), (40, 20, True)):
        try:
            Batches.for_devices({key: value[:n] for key, value in arrays.items()}, size, drop_last=drop_last)
        except ValueError as error:
            report["errors"].append(str(error))
    print(json.dumps(report))
"""


def test_sharding_on_8_simulated_devices():
    process = python_process(SHARDED_8, xla_flags="--xla_force_host_platform_device_count=8")
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    # 40 examples in batches of 16 with drop_last=False: 16, 16 and a last batch of 8, one row per device.
    assert report["devices"] == 8 and report["batches"] == 3
    assert len(report["errors"]) == 3
    assert report["errors"][0].startswith("Batches: batch_size cannot be split by the sharding: array 'image' of "
                                          "batch shape (12, 3, 2, 1)")
    assert report["errors"][1].startswith("Batches: the last batch (4 examples, drop_last=False) cannot be split")
    assert "batch shape (20, 3, 2, 1)" in report["errors"][2]


TWO_PROCESSES = """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from jaxnets.data import Batches

    arrays = {"image": np.arange(36 * 2, dtype=np.int32).reshape(36, 2), "label": np.arange(36, dtype=np.int32)}
    reference = [b for b in Batches(arrays, 16, seed=1, process_index=0, process_count=1).epoch(3)]
    local = [b for b in Batches(arrays, 16, seed=1).epoch(3)]  # no sharding: this process's rows
    for got, want in zip(local, reference):
        assert np.array_equal(got["label"], want["label"][8 * process_id:8 * (process_id + 1)])
    devices = jax.devices()
    interleaved = [devices[i // 2 + 4 * (i % 2)] for i in range(8)]  # processes alternate along the mesh
    checked = 0
    for order in (devices, interleaved):
        sharding = NamedSharding(Mesh(np.array(order), ("batch",)), PartitionSpec("batch"))
        for got, want in zip(Batches(arrays, 16, seed=1, sharding=sharding).epoch(3), reference):
            for key in arrays:
                x = got[key]
                assert x.shape == want[key].shape and x.sharding == sharding
                for shard in x.addressable_shards:
                    assert np.array_equal(np.asarray(shard.data), want[key][shard.index]), (key, shard.index)
                    checked += 1
    print(json.dumps({"process": jax.process_index(), "count": jax.process_count(), "checked": checked}))
"""


@pytest.mark.slow
def test_two_processes_assemble_the_global_batch():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [python_process(TWO_PROCESSES, str(i), str(port), xla_flags="--xla_force_host_platform_device_count=4")
             for i in range(2)]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # 2 batches of 16 (36 examples, drop_last), 2 keys, 4 local shards, 2 meshes.
    assert results == [{"process": p, "count": 2, "checked": 2 * 2 * 4 * 2} for p in range(2)]


# ------------------------------------------------------------------------------------------------
# Errors


def test_argument_errors():
    arrays = make_arrays(10)
    with pytest.raises(ValueError, match="Batches: arrays must be a non-empty dict .*got an empty dict"):
        Batches({}, 2)
    with pytest.raises(ValueError, match="Batches: arrays must be a non-empty dict .*got list"):
        Batches([np.zeros(3)], 2)
    with pytest.raises(ValueError, match=r"Batches: all arrays must have the same length .*'label': 9"):
        Batches({"image": np.zeros((10, 2)), "label": np.zeros(9)}, 2)
    with pytest.raises(ValueError, match=r"Batches: arrays must have a leading \(example\) axis; \['step'\]"):
        Batches({"label": np.zeros(4), "step": np.int32(3)}, 2)
    with pytest.raises(ValueError, match="Batches: batch_size must be >= 1, got 0"):
        Batches(arrays, 0)
    with pytest.raises(ValueError, match="Batches: batch_size must be >= 1, got -4"):
        Batches(arrays, -4)
    with pytest.raises(TypeError, match="Batches: batch_size must be an int, got float 2.0"):
        Batches(arrays, 2.0)
    with pytest.raises(ValueError, match="Batches: batch_size 11 is larger than the 10 examples, so drop_last=True"):
        Batches(arrays, 11)
    with pytest.raises(ValueError, match="Batches: seed must be >= 0, got -1"):
        Batches(arrays, 2, seed=-1)
    with pytest.raises(ValueError, match="Batches: prefetch must be >= 0, got -1"):
        Batches(arrays, 2, prefetch=-1)
    with pytest.raises(ValueError, match="Batches: give both process_index and process_count or neither"):
        Batches(arrays, 2, process_index=0)
    with pytest.raises(ValueError, match=r"Batches: process_index must be in \[0, 2\), got 2"):
        Batches(arrays, 2, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="Batches: batch_size must be divisible by process_count=3 .*got 4"):
        Batches(arrays, 4, process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"Batches: the last batch \(1 examples, drop_last=False\) must be divisible "
                                         r"by process_count=2"):
        Batches(make_arrays(9), 4, drop_last=False, process_index=0, process_count=2)
    with pytest.raises(TypeError, match="Batches: sharding must be a jax.sharding.Sharding or None, got str"):
        Batches(arrays, 2, sharding="batch")
    with pytest.raises(ValueError, match="Batches: process_count=2 differs from jax.process_count"):
        Batches(arrays, 2, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]), process_index=0,
                process_count=2)
    with pytest.raises(ValueError, match="Batches: epoch must be >= 0, got -1"):
        Batches(arrays, 2).epoch(-1)
