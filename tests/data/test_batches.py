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

from jaxnets.data import Batches, mnist_sample, steps_per_epoch

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
# The last batch: torch's epoch length, padding with a mask


@pytest.mark.parametrize("drop_last", [True, False])
def test_steps_per_epoch_and_len_agree_with_torch_dataloader(drop_last):
    torch = pytest.importorskip("torch")
    for n in (0, 1, 5, 9, 10, 11, 100, 5000):
        for size in (1, 3, 4, 10, 64, 128):
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(n)), batch_size=size,
                                                 drop_last=drop_last)
            assert steps_per_epoch(n, size, drop_last=drop_last) == len(loader), (n, size)
            if n and not (drop_last and size > n):
                batches = Batches({"label": np.arange(n)}, size, drop_last=drop_last, shuffle=False, prefetch=0)
                assert len(batches) == len(loader), (n, size)
                # The batches themselves: torch's sizes, and (unshuffled) torch's rows.
                assert ids(collect(batches.epoch(0))) == [b[0].tolist() for b in loader]
                padded = Batches({"label": np.arange(n)}, size, drop_last=drop_last, pad_last=True, shuffle=False,
                                 prefetch=0)
                got = collect(padded.epoch(0))
                assert len(got) == len(loader)
                assert [b["label"][b["mask"]].tolist() for b in got] == [b[0].tolist() for b in loader]


def test_steps_per_epoch_errors():
    assert steps_per_epoch(np.int64(7), 2, drop_last=False) == 4
    with pytest.raises(TypeError, match="steps_per_epoch: num_examples must be an int >= 0, got float 10.0"):
        steps_per_epoch(10.0, 2, drop_last=True)
    with pytest.raises(ValueError, match="steps_per_epoch: num_examples must be an int >= 0, got -1"):
        steps_per_epoch(-1, 2, drop_last=True)
    with pytest.raises(ValueError, match="steps_per_epoch: batch_size must be an int >= 1, got 0"):
        steps_per_epoch(10, 0, drop_last=True)
    with pytest.raises(TypeError, match="steps_per_epoch: batch_size must be an int >= 1, got bool True"):
        steps_per_epoch(10, True, drop_last=True)
    with pytest.raises(TypeError, match="steps_per_epoch: drop_last must be a Python bool .*got NoneType None"):
        steps_per_epoch(10, 2, drop_last=None)
    with pytest.raises(TypeError, match="drop_last"):
        steps_per_epoch(10, 2)  # required, as torch's default differs from Batches'


@pytest.mark.parametrize("prefetch", [0, 2])
def test_pad_last_pads_with_masked_zero_rows(prefetch):
    arrays = make_arrays(10)
    plain = collect(Batches(arrays, 4, seed=1, drop_last=False, prefetch=prefetch).epoch(3))
    padded = collect(Batches(arrays, 4, seed=1, drop_last=False, pad_last=True, prefetch=prefetch).epoch(3))
    assert [sorted(b) for b in padded] == [["image", "label", "mask"]] * 3
    assert [b["image"].shape for b in padded] == [(4, 2, 2, 1)] * 3  # one shape: the step compiles once
    assert [b["mask"].tolist() for b in padded] == [[True] * 4, [True] * 4, [True, True, False, False]]
    assert padded[-1]["mask"].dtype == np.bool_
    for got, want in zip(padded, plain):  # the valid rows are the unpadded batches, in the same order
        for key in arrays:
            np.testing.assert_array_equal(got[key][got["mask"]], want[key])
            assert np.all(got[key][~got["mask"]] == 0) and got[key].dtype == want[key].dtype
    assert arrays["label"].tolist() == list(range(10))  # the dataset itself is untouched
    full = collect(Batches(arrays, 5, drop_last=True, pad_last=True, prefetch=prefetch).epoch(0))
    assert [b["mask"].tolist() for b in full] == [[True] * 5] * 2


def test_pad_last_keeps_an_existing_mask():
    arrays = {**make_arrays(6), "mask": np.array([1, 0, 1, 1, 0, 1])}
    got = collect(Batches(arrays, 4, shuffle=False, drop_last=False, pad_last=True).epoch(0))
    assert [b["mask"].tolist() for b in got] == [[True, False, True, True], [False, True, False, False]]


def test_padded_last_batch_trains_like_the_short_one():
    """The masked, padded last batch gives the step of the unpadded short batch (loss, gradient, BatchNorm
    statistics), with one compilation for the whole epoch."""
    import optax

    from jaxnets import nn as jnn
    from jaxnets.train.state import TrainState
    from jaxnets.train.steps import make_train_step

    model = jnn.Sequential([jnn.Flatten(), jnn.Dense(6), jnn.BatchNorm(), jnn.ReLU(), jnn.Dense(3)])
    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(10, 2, 2, 1)).astype(np.float32), "label": rng.integers(0, 3, 10)}
    traces = []

    def counted(state, batch):
        traces.append(1)
        return make_train_step(preprocess=lambda x: x)(state, batch)

    step = jax.jit(counted)
    states = {}
    for pad_last in (False, True):
        state = TrainState.create(model, optax.sgd(0.1), arrays["image"][:1], 0)
        for batch in Batches(arrays, 4, seed=2, drop_last=False, pad_last=pad_last).epoch(0):
            state, metrics = step(state, batch)
        assert int(metrics["count"]) == 2  # the last batch: 10 = 4 + 4 + 2 valid rows
        states[pad_last] = state
    assert len(traces) == 2 + 1  # unpadded: full and short batch shapes; padded: one
    for a, b in zip(jax.tree.leaves((states[False].params, states[False].batch_stats)),
                    jax.tree.leaves((states[True].params, states[True].batch_stats))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


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


def test_process_slices_of_padded_batches():
    """9 examples in global batches of 4 over 2 processes: unpadded, the last batch (1 example) cannot be
    split; padded, every process gets 2 rows of each batch, the second process only padding in the last."""
    arrays = make_arrays(9)
    whole = collect(Batches(arrays, 4, seed=5, drop_last=False, pad_last=True, process_index=0,
                            process_count=1).epoch(1))
    slices = [collect(Batches(arrays, 4, seed=5, drop_last=False, pad_last=True, process_index=p,
                              process_count=2).epoch(1)) for p in range(2)]
    assert len(whole) == 3 and [len(b["label"]) for b in slices[0]] == [2, 2, 2]
    assert slices[1][-1]["mask"].tolist() == [False, False]
    for b, global_batch in enumerate(whole):
        for key in (*arrays, "mask"):
            np.testing.assert_array_equal(np.concatenate([slices[p][b][key] for p in range(2)]), global_batch[key])


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
    padded = Batches.for_devices({key: value[:36] for key, value in arrays.items()}, 16, seed=2, drop_last=False,
                                 pad_last=True)
    got = [{key: np.asarray(x) for key, x in batch.items()} for batch in padded.epoch(0)]
    first = next(iter(padded.epoch(0)))
    report["padded"] = {
        "shapes": [list(b["image"].shape) for b in got], "valid": [int(b["mask"].sum()) for b in got],
        "per_device": sorted({s.data.shape[0] for s in first["mask"].addressable_shards}),
        "labels": sorted(int(v) for b in got for v in b["label"][b["mask"]]),
        "padding_zero": bool(all(np.all(b["image"][~b["mask"]] == 0) for b in got))}
    print(json.dumps(report))
"""


@pytest.mark.slow
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
    assert report["errors"][1].startswith("Batches: the last batch (4 examples, drop_last=False, pad_last=False) "
                                          "cannot be split")
    assert "or pad_last=True" in report["errors"][1]
    # pad_last=True: the same 36 examples give 3 full batches of 16, sharded 2 rows per device, the last masked.
    assert report["padded"] == {"shapes": [[16, 3, 2, 1]] * 3, "valid": [16, 16, 4], "per_device": [2],
                                "labels": list(range(36)), "padding_zero": True}
    assert "batch shape (20, 3, 2, 1)" in report["errors"][2]


TWO_PROCESSES = """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    process_id, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
    from jaxnets.data import Batches

    arrays = {"image": np.arange(36 * 2, dtype=np.int32).reshape(36, 2), "label": np.arange(36, dtype=np.int32)}
    devices = jax.devices()
    interleaved = [devices[i // 2 + 4 * (i % 2)] for i in range(8)]  # processes alternate along the mesh
    checked, batches = 0, []
    # drop_last=True: 2 batches of 16; pad_last=True: 3 batches of 16, the last one 4 examples and 12 masked rows.
    for options in ({}, {"drop_last": False, "pad_last": True}):
        reference = [b for b in Batches(arrays, 16, seed=1, process_index=0, process_count=1, **options).epoch(3)]
        local = [b for b in Batches(arrays, 16, seed=1, **options).epoch(3)]  # no sharding: this process's rows
        assert len(local) == len(reference)
        for got, want in zip(local, reference):
            for key in want:
                assert np.array_equal(got[key], want[key][8 * process_id:8 * (process_id + 1)])
        for order in (devices, interleaved):
            sharding = NamedSharding(Mesh(np.array(order), ("batch",)), PartitionSpec("batch"))
            got_batches = list(Batches(arrays, 16, seed=1, sharding=sharding, **options).epoch(3))
            batches.append(len(got_batches))
            for got, want in zip(got_batches, reference):
                assert sorted(got) == sorted(want)
                for key in want:
                    x = got[key]
                    assert x.shape == want[key].shape and x.sharding == sharding
                    for shard in x.addressable_shards:
                        assert np.array_equal(np.asarray(shard.data), want[key][shard.index]), (key, shard.index)
                        checked += 1
    print(json.dumps({"process": jax.process_index(), "count": jax.process_count(), "checked": checked,
                      "batches": batches}))
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
    # 2 meshes; drop_last: 2 batches of 16 (36 examples), 2 keys, 4 local shards; padded: 3 batches, 3 keys.
    checked = 2 * (2 * 2 * 4 + 3 * 3 * 4)
    assert results == [{"process": p, "count": 2, "checked": checked, "batches": [2, 2, 3, 3]} for p in range(2)]


# ------------------------------------------------------------------------------------------------
# Errors


def test_argument_errors():
    arrays = make_arrays(10)
    with pytest.raises(ValueError, match="Batches: arrays must be a non-empty dict .*got an empty dict"):
        Batches({}, 2)
    with pytest.raises(TypeError, match="Batches: arrays must be a dict of arrays .*got list"):
        Batches([np.zeros(3)], 2)
    with pytest.raises(ValueError, match=r"Batches: all arrays in arrays must have the same length .*'label': 9"):
        Batches({"image": np.zeros((10, 2)), "label": np.zeros(9)}, 2)
    with pytest.raises(ValueError, match=r"Batches: every array in arrays must have a leading \(example\) axis; "
                                         r"\['step'\]"):
        Batches({"label": np.zeros(4), "step": np.int32(3)}, 2)
    with pytest.raises(ValueError, match="Batches: batch_size must be an int >= 1, got 0"):
        Batches(arrays, 0)
    with pytest.raises(ValueError, match="Batches: batch_size must be an int >= 1, got -4"):
        Batches(arrays, -4)
    with pytest.raises(TypeError, match="Batches: batch_size must be an int >= 1, got float 2.0"):
        Batches(arrays, 2.0)
    with pytest.raises(TypeError, match="Batches: batch_size must be an int >= 1, got bool True"):
        Batches(arrays, True)
    with pytest.raises(ValueError, match="Batches: batch_size 11 is larger than the 10 examples, so drop_last=True"):
        Batches(arrays, 11)
    with pytest.raises(ValueError, match="Batches: seed must be an int >= 0, got -1"):
        Batches(arrays, 2, seed=-1)
    with pytest.raises(ValueError, match="Batches: prefetch must be an int >= 0, got -1"):
        Batches(arrays, 2, prefetch=-1)
    for flag in ("shuffle", "drop_last", "pad_last"):
        with pytest.raises(TypeError, match=f"Batches: {flag} must be a Python bool .*got int 1"):
            Batches(arrays, 2, **{flag: 1})
    with pytest.raises(ValueError, match="Batches: give both process_index and process_count or neither"):
        Batches(arrays, 2, process_index=0)
    with pytest.raises(ValueError, match=r"Batches: process_index must be in \[0, 2\), got 2"):
        Batches(arrays, 2, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="Batches: process_count must be an int >= 1, got 0"):
        Batches(arrays, 2, process_index=0, process_count=0)
    with pytest.raises(ValueError, match="Batches: batch_size must be divisible by process_count=3 .*got 4"):
        Batches(arrays, 4, process_index=0, process_count=3)
    with pytest.raises(ValueError, match=r"Batches: the last batch \(1 examples, drop_last=False, pad_last=False\) "
                                         r"must be divisible by process_count=2"):
        Batches(make_arrays(9), 4, drop_last=False, process_index=0, process_count=2)
    with pytest.raises(TypeError, match="Batches: sharding must be a jax.sharding.Sharding or None, got str"):
        Batches(arrays, 2, sharding="batch")
    with pytest.raises(ValueError, match="Batches: process_count=2 differs from jax.process_count"):
        Batches(arrays, 2, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]), process_index=0,
                process_count=2)
    with pytest.raises(ValueError, match="Batches.order: epoch must be an int >= 0, got -1"):
        Batches(arrays, 2).epoch(-1)
    with pytest.raises(TypeError, match="Batches.order: epoch must be an int >= 0, got str '1'"):
        Batches(arrays, 2).epoch("1")
