"""Loader: the batches of Batches from a source through Grain; order from (seed, epoch); seeking; workers;
per-process shards (simulated, and two real JAX processes); its checks."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grain
import numpy as np
import pytest
from PIL import Image

from jaxnets import data
from jaxnets.data.transforms import RandomHorizontalFlip, RandomResizedCrop

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
N = 37


@pytest.fixture(scope="module")
def npy(tmp_path_factory):
    directory = tmp_path_factory.mktemp("arrays")
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (N, 6, 5, 3), dtype=np.uint8),
              "label": rng.integers(0, 4, N).astype(np.int32)}
    np.save(directory / "x.npy", arrays["image"])
    np.save(directory / "y.npy", arrays["label"])
    return directory, arrays


@pytest.fixture
def source(npy):
    directory, _ = npy
    return data.ArraySource(directory / "x.npy", directory / "y.npy")


def _epoch(loader, epoch, **kwargs):
    with loader.epoch(epoch, **kwargs) as it:
        return list(it)


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            assert x[key].dtype == y[key].dtype, key
            np.testing.assert_array_equal(x[key], y[key])


@pytest.mark.parametrize("options", [dict(), dict(shuffle=False), dict(drop_last=False), dict(seed=7)])
def test_loader_gives_the_batches_of_batches(npy, source, options):
    """Over an ArraySource, a Loader yields bit for bit what Batches yields over the same arrays."""
    _, arrays = npy
    pad = {"pad_last": True} if options.get("drop_last") is False else {}
    reference = data.Batches(arrays, 8, prefetch=0, **options, **pad)
    loader = data.Loader(source, 8, **options)
    assert len(loader) == len(reference) and loader.num_examples == N and loader.batch_size == 8
    for epoch in (0, 1):
        _assert_same(_epoch(loader, epoch), list(reference.epoch(epoch)))


def test_order_is_a_function_of_seed_and_epoch(source):
    transforms = [RandomResizedCrop(4), RandomHorizontalFlip()]
    first = data.Loader(source, 8, seed=3, transforms=transforms)
    second = data.Loader(source, 8, seed=3, transforms=transforms, read_threads=1)  # other threads: same batches
    _assert_same(_epoch(first, 1), _epoch(second, 1))
    labels = lambda batches: np.concatenate([b["label"] for b in batches])  # noqa: E731
    images = lambda batches: np.concatenate([b["image"] for b in batches])  # noqa: E731
    assert not np.array_equal(images(_epoch(first, 0)), images(_epoch(first, 1)))  # another epoch: another order
    other_seed = data.Loader(source, 8, seed=4, transforms=transforms)
    assert not np.array_equal(labels(_epoch(first, 1)), labels(_epoch(other_seed, 1)))
    # Each example's augmentation depends on (seed, epoch, index), not on its position in the batch.
    unshuffled = data.Loader(source, 8, seed=3, transforms=transforms, shuffle=False)
    shuffled_order = first.order(1)
    by_index = {int(i): img for i, img in zip(shuffled_order, images(_epoch(first, 1)))}
    flat = images(_epoch(unshuffled, 1))
    for i in list(by_index)[:10]:
        np.testing.assert_array_equal(by_index[i], flat[i])


def test_example_rng_is_a_function_of_seed_epoch_and_index():
    from concurrent.futures import ThreadPoolExecutor

    draws = lambda *key: data.example_rng(*key).random(6)  # noqa: E731
    reference = draws(3, 1, 12)
    draws(3, 1, 13)  # another example in between: the re-keyed generator forgets it
    np.testing.assert_array_equal(draws(3, 1, 12), reference)
    for other in ((3, 1, 13), (3, 2, 12), (4, 1, 12)):
        assert not np.array_equal(draws(*other), reference), other
    # Philox with key (seed, epoch) and counter (0, 0, index, 0): numpy's own generator built from scratch.
    expected = np.random.Generator(np.random.Philox(key=(3, 1), counter=(0, 0, 12, 0))).random(6)
    np.testing.assert_array_equal(reference, expected)
    with ThreadPoolExecutor(4) as pool:  # one generator per thread
        results = list(pool.map(lambda i: draws(3, 1, i % 3), range(60)))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, draws(3, 1, i % 3))


def test_start_seeks_without_reading_earlier_batches(npy, source):
    read = []

    class Counting(data.ArraySource):
        def __getitem__(self, index):
            read.append(int(index))
            return super().__getitem__(index)

    directory, _ = npy
    # One reading thread: reads happen in batch order (with 8, the next epoch's first batches are read
    # concurrently with this epoch's last ones, and may touch the same examples).
    loader = data.Loader(Counting(directory / "x.npy", directory / "y.npy"), 8, seed=1, read_threads=1, prefetch=1)
    read.clear()
    tail = _epoch(loader, 1, start=2)
    assert len(tail) == len(loader) - 2
    _assert_same(tail, _epoch(loader, 1)[2:])
    skipped = set(loader.order(1)[:16].tolist())
    assert skipped.isdisjoint(read[:16])  # the first 16 reads were of batches 2 and 3, not 0 and 1
    assert _epoch(loader, 0, start=len(loader)) == []


def test_worker_process_gives_the_same_batches(source):
    transforms = [RandomResizedCrop(4), RandomHorizontalFlip()]
    in_process = data.Loader(source, 8, seed=2, transforms=transforms, drop_last=False)
    worker = data.Loader(source, 8, seed=2, transforms=transforms, drop_last=False, worker_count=1)
    _assert_same(_epoch(worker, 1), _epoch(in_process, 1))
    stream = worker._stream
    _assert_same(_epoch(worker, 2), _epoch(in_process, 2))
    assert worker._stream is stream  # epoch 2 continued the running worker: no second start
    worker.close()
    assert worker._stream is None


def test_the_running_stream_continues_into_the_next_epoch_or_restarts(source):
    loader = data.Loader(source, 8, seed=2, transforms=[RandomHorizontalFlip()])
    fresh = data.Loader(source, 8, seed=2, transforms=[RandomHorizontalFlip()])
    first = _epoch(loader, 0)
    stream = loader._stream
    assert stream.position == (1, 0)
    _assert_same(_epoch(loader, 1), _epoch(fresh, 1))
    assert loader._stream is stream
    _assert_same(_epoch(loader, 0), first)  # an earlier epoch: a new stream, the same batches
    assert loader._stream is not stream


def test_simulated_processes_read_their_rows(source):
    whole = _epoch(data.Loader(source, 8, seed=1), 0)
    parts = [_epoch(data.Loader(source, 8, seed=1, process_index=p, process_count=2), 0) for p in (0, 1)]
    for full, first, second in zip(whole, *parts):
        for key in full:
            np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), full[key])


def test_arrays_view_and_dataset_check(source):
    loader = data.Loader(source, 8, transforms=[RandomResizedCrop((4, 3))])
    view = loader.arrays
    assert view["image"].shape == (N, 4, 3, 3) and view["image"].dtype == np.uint8
    np.testing.assert_array_equal(view["label"], source.labels)
    assert data.check_dataset("fit", "train_data", loader, num_classes=4) == N
    with pytest.raises(ValueError, match=r"fit: train_data\['label'\] must be in \[0, 3\)"):
        data.check_dataset("fit", "train_data", loader, num_classes=3)


def test_grain_map_dataset_and_folder_sources(tmp_path, source):
    dataset = grain.MapDataset.source(source).map(lambda e: {**e, "image": e["image"][:4]})
    loader = data.Loader(dataset, 5, shuffle=False)
    np.testing.assert_array_equal(loader.labels, source.labels)  # read once: a MapDataset has no labels
    batch = _epoch(loader, 0)[0]
    np.testing.assert_array_equal(batch["image"], np.stack([source[i]["image"][:4] for i in range(5)]))
    for name, size in (("a/0.png", (4, 4)), ("a/1.png", (5, 4))):
        os.makedirs(tmp_path / "root" / "a", exist_ok=True)
        Image.fromarray(np.zeros(size, np.uint8)).save(tmp_path / "root" / name)
    folder = data.ImageFolder(tmp_path / "root")
    with pytest.raises(ValueError, match=r"Loader: example 1 has image of shape \(5, 4, 1\), but example 0's is "
                                         r"\(4, 4, 1\)"):
        _epoch(data.Loader(folder, 2, shuffle=False), 0)
    fixed = data.Loader(folder, 2, shuffle=False, transforms=[data.transforms.CenterCrop(3)])
    assert _epoch(fixed, 0)[0]["image"].shape == (2, 3, 3, 1)


def test_loader_errors(source):
    with pytest.raises(TypeError, match="Loader: source must be a random-access source"):
        data.Loader({"image": np.zeros((2, 2, 2, 1)), "label": np.zeros(2)}, 1)
    with pytest.raises(ValueError, match="Loader: batch_size 64 is larger than the 37 examples"):
        data.Loader(source, 64)
    with pytest.raises(ValueError, match="Loader: batch_size must be divisible by process_count=2"):
        data.Loader(source, 7, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="Loader: give both process_index and process_count or neither"):
        data.Loader(source, 8, process_index=0)
    with pytest.raises(TypeError, match="Loader: transforms must be a sequence"):
        data.Loader(source, 8, transforms=RandomHorizontalFlip())
    with pytest.raises(TypeError, match=r"Loader: transforms\[0\] must be a grain.transforms.Map"):
        data.Loader(source, 8, transforms=[3])
    with pytest.raises(TypeError, match="Loader: worker_count must be"):
        data.Loader(source, 8, worker_count=1.0)
    with pytest.raises(ValueError, match=r"Loader: labels must have shape \[N\] = \(37,\)"):
        data.Loader(source, 8, labels=np.zeros(3, np.int32))
    with pytest.raises(TypeError, match=r"Loader: source\[0\] \(after the transforms\) must be a dict"):
        data.Loader(source, 8, transforms=[lambda e: e["image"]])
    with pytest.raises(ValueError, match="Loader.dataset: start must be"):
        data.Loader(source, 8).epoch(0, start=99)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_jax_processes_each_read_only_their_shard(npy, source, tmp_path):
    directory, _ = npy
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    port, procs, logs = _free_port(), [], []
    try:
        for i in range(2):
            logs.append(open(tmp_path / f"process{i}.log", "w"))
            procs.append(subprocess.Popen([sys.executable, str(HERE / "_pipeline_worker.py"), str(i), "2", str(port),
                                           str(directory), str(tmp_path)], cwd=HERE, env=env, stdout=logs[i],
                                          stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 300
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
        assert p.returncode == 0, f"process {i} failed:\n{(tmp_path / f'process{i}.log').read_text()[-4000:]}"
    results = [dict(np.load(tmp_path / f"process{i}.npz")) for i in range(2)]
    # One process reading the whole global batches, with the same seed and transforms.
    single = data.Loader(source, 8, seed=5, transforms=[RandomHorizontalFlip()])
    for epoch in (0, 1):
        whole = _epoch(single, epoch)
        for p, result in enumerate(results):
            rows = slice(4 * p, 4 * (p + 1))
            np.testing.assert_array_equal(result[f"image{epoch}"], np.stack([b["image"][rows] for b in whole]))
            np.testing.assert_array_equal(result[f"label{epoch}"], np.stack([b["label"][rows] for b in whole]))
    for p, result in enumerate(results):
        # Every example of this process's rows of epochs 0 and 1, and nothing else (besides example 0, read
        # once at construction for the shapes, and the first batches of epoch 2, read ahead by the running
        # stream: of this process's rows too).
        rows = [set(single.local_indices(epoch)[:, 4 * p:4 * (p + 1)].ravel().tolist()) for epoch in (0, 1, 2)]
        read = result["read"].tolist()
        assert read[0] == 0 and rows[0] | rows[1] <= set(read[1:]) <= rows[0] | rows[1] | rows[2]
        assert len(read) - 1 >= 2 * len(single) * 4  # each of its rows once per epoch, then epoch 2's
        np.testing.assert_array_equal(result["sharded_label"], _epoch(single, 0)[0]["label"][4 * p:4 * (p + 1)])
