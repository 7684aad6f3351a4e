"""Loader's worker processes (jaxnets.data.processes, jaxnets.data.reading): what a worker imports (numpy and
Pillow, not jax, flax or grain), the round-robin merge, errors and dead workers, and that the batches with
workers are those without, from any position."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnets import data
from jaxnets.data import processes, reading

ROOT = Path(__file__).parent.parent.parent
HEAVY = ("jax", "jaxlib", "flax", "optax", "grain", "orbax")


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip()


def _heavy_modules() -> str:
    return f"import sys; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


@pytest.mark.slow
def test_what_a_worker_imports_pulls_no_jax_flax_or_grain():
    # The fork server's preload, then unpickling a reader with every source and transform a worker may get.
    assert _run("from jaxnets.data import worker_init\n"
                "from jaxnets.data import reading, sources, transforms\n" + _heavy_modules()) == "[]"
    # `import jaxnets` and `from jaxnets import data` import no sub-package either (PEP 562 lazy names) ...
    assert _run("import jaxnets\nfrom jaxnets import data\n" + _heavy_modules()) == "[]"
    # ... and every public name is still there, imported on first use.
    assert _run("import jaxnets\nprint(jaxnets.data.Loader.__name__, jaxnets.jit.__name__, jaxnets.train.fit.__name__, "
                "'Loader' in dir(jaxnets.data), 'train' in dir(jaxnets))") == "Loader jit fit True True"


@pytest.mark.slow
def test_transforms_stay_grain_transforms_outside_workers():
    # In a program (not a worker), importing transforms alone registers them with Grain's abstract classes.
    out = _run("from jaxnets.data import transforms as t\nimport grain\n"
               "print(isinstance(t.RandomResizedCrop(4), grain.transforms.RandomMap), "
               "isinstance(t.CenterCrop(4), grain.transforms.Map), issubclass(t.Normalize, grain.transforms.Map))")
    assert out == "True True True"
    assert not processes.in_worker_process()


@pytest.mark.slow
def test_worker_stream_merges_round_robin():
    stream = processes.WorkerStream(lambda w: iter(range(w, 1000, 3)), 3, buffer=2, name="test worker")
    try:
        assert [stream.next() for _ in range(30)] == list(range(30))  # element j from worker j % 3
    finally:
        stream.close()
    assert all(not p.is_alive() for p in stream.processes)


def _fail_at(w):
    yield w
    raise ValueError(f"bad element in worker {w}")


@pytest.mark.slow
def test_worker_errors_and_deaths_reach_the_reader():
    stream = processes.WorkerStream(_fail_at, 2, buffer=2, name="test worker")
    try:
        assert [stream.next(), stream.next()] == [0, 1]
        with pytest.raises(ValueError, match="bad element in worker 0") as info:
            stream.next()
        assert any("raised in test worker process 0" in note for note in info.value.__notes__)
    finally:
        stream.close()
    dead = processes.WorkerStream(lambda w: os._exit(3), 1, buffer=1, name="test worker")
    try:
        with pytest.raises(RuntimeError, match=r"test worker process 0 ended \(exit code 3\)"):
            dead.next()
    finally:
        dead.close()


class _WhereRead:
    """A source that records, in each example, the process that read it and whether jax was imported there."""

    def __init__(self, n):
        self.labels = np.arange(n, dtype=np.int32) % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"image": np.full((2, 2, 1), index, np.uint8), "label": self.labels[index],
                "pid": np.int64(os.getpid()), "jax": np.bool_("jax" in sys.modules or "grain" in sys.modules)}


@pytest.mark.slow
def test_worker_processes_read_without_jax():
    loader = data.Loader(_WhereRead(12), 4, worker_count=2, transforms=[data.transforms.RandomHorizontalFlip()])
    try:
        with loader.epoch(0) as it:
            batches = list(it)
    finally:
        loader.close()
    pids = {int(p) for b in batches for p in b["pid"]}
    assert len(pids) == 2 and os.getpid() not in pids  # two worker processes read, not this one
    assert not any(b["jax"].any() for b in batches)  # ... and neither had imported jax or grain


@pytest.fixture
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (29, 6, 5, 3), dtype=np.uint8), rng.integers(0, 4, 29).astype(np.int32)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    return data.ArraySource(tmp_path / "x.npy", tmp_path / "y.npy")


@pytest.mark.slow
def test_workers_give_the_batches_of_no_workers_from_any_position(arrays):
    transforms = [data.transforms.RandomResizedCrop(4), data.transforms.RandomHorizontalFlip()]
    kwargs = dict(seed=3, transforms=transforms, drop_last=False)
    reference = data.Loader(arrays, 6, **kwargs)
    workers = data.Loader(arrays, 6, worker_count=2, read_threads=2, **kwargs)
    try:
        for epoch, start in ((0, 0), (1, 0), (2, 3)):  # (2, 3): a resumed position, a new stream
            with reference.epoch(epoch, start=start) as it:
                expected = list(it)
            with workers.epoch(epoch, start=start) as it:
                got = list(it)
            assert len(got) == len(expected) == len(reference) - start
            for x, y in zip(got, expected):
                assert sorted(x) == sorted(y)
                for key in x:
                    assert x[key].dtype == y[key].dtype
                    np.testing.assert_array_equal(x[key], y[key])
    finally:
        workers.close()


def test_grain_dataset_gives_the_batches_of_epoch(arrays):
    import itertools

    loader = data.Loader(arrays, 6, seed=1, drop_last=False, transforms=[data.transforms.RandomHorizontalFlip()])
    with loader.epoch(1, start=2) as it:
        expected = list(it)
    got = list(itertools.islice(iter(loader.dataset(1, start=2)), len(expected)))
    for x, y in zip(got, expected, strict=True):
        for key in y:
            np.testing.assert_array_equal(x[key], y[key])


class _Rows:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return {"image": np.full((1, 1, 1), index, np.uint8), "label": np.int32(index % 2)}


def test_read_batches_gives_the_batches_in_order_from_any_threads():
    reader = reading.BatchReader(_Rows(23), [], seed=0, shuffle=True, num_examples=23, batch_size=5, steps=5,
                                 rows=np.arange(5), spec={"image": ((1, 1, 1), np.uint8), "label": ((), np.int32)},
                                 mask=True)
    expected = [reader(k) for k in range(2, 14)]  # epochs 0, 1, 2 (5 batches each, the last one padded)
    for threads, ahead in ((1, 1), (3, 2), (8, 8)):
        got = list(reading.read_batches(reader, range(2, 14), threads=threads, ahead=ahead))
        for x, y in zip(got, expected, strict=True):
            assert sorted(x) == ["image", "label", "mask"]
            for key in y:
                np.testing.assert_array_equal(x[key], y[key])
    assert expected[2]["mask"].tolist() == [True, True, True, False, False]  # batch 4 of epoch 0: 3 of 23 left
    order = reading.epoch_order(23, 0, 0, shuffle=True)
    np.testing.assert_array_equal(expected[0]["image"].ravel(), order[10:15])
