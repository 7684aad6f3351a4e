"""Loader: batches read from a random-access source, for datasets larger than memory.

`Loader(source, batch_size, ...)` is a `Batches` (the protocol `fit`, `evaluate` and `recompute_batch_stats`
use: `epoch(e)`, `len()`, `batch_size`, `num_examples`) whose examples are read from a source
(`ImageFolder`, `ArraySource`, `ArrayRecordSource`, a `grain.MapDataset`, or any object with `len()`
and `source[i] -> {"image": [H, W, C], "label": int}`) when their batch is produced, decoded and
transformed (`jaxnets.data.transforms`, Grain transforms) by reading threads and, with `worker_count > 0`,
in worker processes. The guarantees of `Batches` hold:

- the order of epoch `e` is `numpy.random.default_rng([seed, e]).permutation(N)`, the same as
  `Batches(arrays, ...)` over the same examples (an `ArraySource` gives bit for bit the batches of
  `Batches` over its arrays), and each example's random transforms draw from
  `example_rng(seed, e, index)`: the batches depend on `(seed, e)` only, not on the number of workers,
  threads or processes;
- process `p` of `P` (`jax.process_index()`, `jax.process_count()`) reads only its rows of every
  global batch, rows `[p * B/P, (p + 1) * B/P)` (or those its devices hold under a sharding);
- `epoch(e, start=k)` starts epoch `e` at its batch `k` without reading the `k` batches before it:
  `(e, k)` is the iterator's whole position, which `fit(..., checkpoint_every=...)` saves with its
  checkpoints so that a run resumed mid-epoch ends bit for bit as an uninterrupted one.

One reader (its threads and worker processes) runs from epoch to epoch, so the next epoch's first batches
are read while the current one ends and worker processes start once, not once per epoch. The reading
(`jaxnets.data.reading`) needs numpy and Pillow only; the workers are forks of a fork server that imports
just that (`jaxnets.data.processes`), not spawned Pythons importing grain, jax and jaxnets as Grain's
`mp_prefetch` starts them (seconds per worker on a busy machine). `Loader.dataset(e)` gives the same
batches as a Grain `IterDataset`, to compose with Grain's own transformations.

    source = data.ImageFolder("imagenet/train", rgb=True)
    loader = data.Loader(source, 256, transforms=data.transforms.imagenet_train(224), worker_count=8)
    state, history = train.fit(model, loader, epochs=90, optimizer=tx, checkpoint_every=1000, ...)

PyTorch: `torch.utils.data.DataLoader(dataset, batch_size, shuffle=True, num_workers=...,
  sampler=DistributedSampler(...))` with `sampler.set_epoch(e)`.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Sharding

from jaxnets.checks import check_bool, check_int, check_positive_int
from jaxnets.data import processes
from jaxnets.data.batches import Batches, EpochIterator
from jaxnets.data.reading import (BatchReader, WorkerBatches, apply_transforms, example_rng, local_indices,
                                  read_batches)

__all__ = ["Loader", "is_source", "apply_transforms", "example_rng"]

def is_source(data) -> bool:
    """Whether `data` is a random-access source a `Loader` reads: a `grain.MapDataset`, or an object with
    `len()` and integer indexing that is not a dict, a `Batches`, an array, a list/tuple or a string."""
    if isinstance(data, grain.MapDataset):
        return True
    if isinstance(data, (Mapping, Batches, np.ndarray, jax.Array, list, tuple, str, bytes)):
        return False
    return callable(getattr(data, "__len__", None)) and callable(getattr(data, "__getitem__", None))


def _check_transforms(fn: str, transforms) -> tuple:
    if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
        raise TypeError(f"{fn}: transforms must be a sequence (list or tuple) of transforms, got "
                        f"{type(transforms).__name__}.")
    for i, t in enumerate(transforms):
        if not (isinstance(t, (grain.transforms.Map, grain.transforms.RandomMap)) or callable(t)):
            raise TypeError(f"{fn}: transforms[{i}] must be a grain.transforms.Map, a grain.transforms.RandomMap or "
                            f"a function example -> example, got {type(t).__name__}.")
    return tuple(transforms)


def _absl_flags_parsed() -> None:
    """Grain's worker start reads an absl flag, which fails outside an absl app before the flags are parsed;
    then mark them parsed (their defaults), as Grain's own tests do. An absl app has parsed them already."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


_HORIZON_EPOCHS = 1 << 20  # a stream's length in epochs: it ends only when it is closed


class _ReadBatch(grain.transforms.Map):
    """Grain map from a batch number `k` (counted over all epochs: epoch `k // len(loader)`, batch
    `k % len(loader)`) to this process's rows of that batch, read and transformed: `reading.BatchReader`.

    Runs in the Grain pipeline of `Loader.dataset(...)`: Grain's reading threads and worker processes."""

    def __init__(self, reader: BatchReader):
        self.reader = reader

    def map(self, k: int) -> dict:
        return self.reader(k)


class _Stream:
    """A running reader of a loader's batches from `(epoch, start)` on, through the following epochs: its
    threads and worker processes keep reading ahead across the end of an epoch.

    Without workers, `reading.read_batches` in this process; with workers, `processes.WorkerStream` over
    `reading.WorkerBatches` (batch `i` of the stream from worker `i % worker_count`, as Grain's
    `mp_prefetch` slices it), each worker a fork of the fork server (see `processes`) running
    `read_batches` on its share. Either way `read_threads` threads per process, each batch's rows split
    between them, `max(read_threads, prefetch)` batches in flight."""

    def __init__(self, loader: Loader, epoch: int, start: int):
        self.steps, self.position = len(loader), (epoch, start)
        first, end = epoch * len(loader) + start, (epoch + _HORIZON_EPOCHS) * len(loader)
        threads, ahead = loader.read_threads, max(loader.read_threads, loader.prefetch)
        if loader.worker_count:
            batches = WorkerBatches(loader.reader, first, end, loader.worker_count, threads=threads, ahead=ahead)
            workers = processes.WorkerStream(batches, loader.worker_count, buffer=loader.prefetch,
                                             name="Loader worker")
            self._next, self._close = workers.next, workers.close
        else:
            reader = read_batches(loader.reader, range(first, end), threads=threads, ahead=ahead)
            self._next, self._close = reader.__next__, reader.close

    def next(self) -> dict:
        batch = self._next()
        epoch, b = self.position
        self.position = (epoch + 1, 0) if b + 1 == self.steps else (epoch, b + 1)
        return batch

    def close(self) -> None:
        self._close()  # stops the reading threads / worker processes


class Loader(Batches):
    """Batches of a random-access source, read, decoded and transformed by threads and worker processes.

    See the module docstring for the guarantees (order from `(seed, epoch)`, per-process shards,
    resumable position). Each batch is a dict of numpy arrays `{"image": [b, ...], "label": int32 [b]}`
    (`b = batch_size / process_count` rows of this process; and `"mask"` bool `[b]` with
    `drop_last=False`), or, with a `sharding`, global `jax.Array`s `[batch_size, ...]`.

    The images of a batch must have one shape: the source's own (an `ArraySource`, a folder of
    same-size images) or the one `transforms` make. The shape and dtype are read from example 0 at
    construction (one read); a later example of another shape raises a ValueError naming it.

    Args:
      source: see the module docstring. Its `labels` attribute ([N] ints, as every source of
        `jaxnets.data.sources` has) is used to check the labels before training; without it, pass
        `labels=`, else every example is read once at construction to collect them.
      batch_size: examples per (global) batch.
      transforms: a sequence of `grain.transforms.Map`/`RandomMap` (e.g. `transforms.imagenet_train(224)`)
        or functions `example -> example`, applied in order to each example.
      shuffle, seed: as `Batches`: the order of epoch `e` is `default_rng([seed, e]).permutation(N)`,
        or `0 .. N-1` with `shuffle=False`.
      drop_last: True: the incomplete last batch is dropped; False: it is padded to `batch_size` with
        zero rows, and every batch carries a `"mask"` (False on the padding), as `Batches(...,
        drop_last=False, pad_last=True)`.
      worker_count: worker processes (0: read in this process). Each process works on whole
        batches, batch `i` in worker `i % worker_count`; the batches are the same for any count.
        Workers start (forks of the fork server, which the first Loader with workers launches when it is
        constructed: see `jaxnets.data.processes`) when reading starts, and keep running from one epoch
        into the next (see `epoch`); `close()` stops them.
      read_threads: threads reading in each process, each batch's rows split between them; up to
        `max(read_threads, prefetch)` batches are read ahead.
      prefetch: batches buffered per worker process (and at least this many read ahead).
      sharding, process_index, process_count: as `Batches`.
      labels: the labels `[N]`, or None (see `source`).
    Raises:
      TypeError: `source` not a source; a non-int `batch_size`/`seed`/`worker_count`/`read_threads`/
        `prefetch`; non-bool `shuffle`/`drop_last`; a bad transform; an example that is not a dict.
      ValueError: an empty source, `batch_size > N` with `drop_last=True`, a batch size not divisible by
        `process_count`, labels of the wrong shape; at read time, an example of another shape than
        example 0, or a file that cannot be decoded (naming it).
    PyTorch: `torch.utils.data.DataLoader(source, batch_size, shuffle, num_workers=worker_count,
      drop_last=drop_last)` with a `DistributedSampler`.
    """

    def __init__(self, source, batch_size: int, *, transforms: Sequence = (), shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, worker_count: int = 0, read_threads: int = 8, prefetch: int = 2,
                 sharding: Sharding | None = None, process_index: int | None = None,
                 process_count: int | None = None, labels=None):
        fn = "Loader"
        if not is_source(source):
            raise TypeError(f"{fn}: source must be a random-access source (jaxnets.data.ImageFolder, ArraySource, a "
                            f"grain.MapDataset, or an object with len() and source[i] -> {{'image', 'label'}}), got "
                            f"{type(source).__name__}.")
        self.source = source
        self.num_examples = len(source)
        if self.num_examples == 0:
            raise ValueError(f"{fn}: source holds no example ({source!r}).")
        self.batch_size = check_positive_int(fn, "batch_size", batch_size)
        self.transforms = _check_transforms(fn, transforms)
        self.shuffle = check_bool(fn, "shuffle", shuffle)
        self.seed = check_int(fn, "seed", seed, minimum=0)
        self.drop_last = check_bool(fn, "drop_last", drop_last)
        self.pad_last = not self.drop_last
        self.worker_count = check_int(fn, "worker_count", worker_count, minimum=0)
        self.read_threads = check_positive_int(fn, "read_threads", read_threads)
        self.prefetch = check_positive_int(fn, "prefetch", prefetch)
        if self.drop_last and self.batch_size > self.num_examples:
            raise ValueError(f"{fn}: batch_size {self.batch_size} is larger than the {self.num_examples} examples, so "
                             f"drop_last=True would yield no batch; use a smaller batch_size or drop_last=False.")
        if (process_index is None) != (process_count is None):
            raise ValueError(f"{fn}: give both process_index and process_count or neither, got "
                             f"process_index={process_index}, process_count={process_count}.")
        if process_count is None:
            self.process_count, self.process_index = jax.process_count(), jax.process_index()
        else:
            self.process_count = check_positive_int(fn, "process_count", process_count)
            self.process_index = check_int(fn, "process_index", process_index, minimum=0,
                                           maximum=self.process_count - 1)
        if sharding is not None and not isinstance(sharding, Sharding):
            raise TypeError(f"{fn}: sharding must be a jax.sharding.Sharding or None, got {type(sharding).__name__}.")
        self.sharding = sharding
        if self.batch_size % self.process_count:
            raise ValueError(f"{fn}: batch_size must be divisible by process_count={self.process_count} (it is the "
                             f"global batch, split evenly between processes), got {self.batch_size}.")
        self.labels = self._labels(fn, labels)
        first = apply_transforms(source[0], self.transforms, example_rng(self.seed, 0, 0))
        if not isinstance(first, Mapping) or "image" not in first or "label" not in first:
            raise TypeError(f"{fn}: source[0] (after the transforms) must be a dict with 'image' [H, W, C] and "
                            f"'label', got {type(first).__name__}.")
        # The batch arrays: image and label (int32), and any other key the examples carry.
        self.spec = {key: (np.shape(value), np.asarray(value).dtype) for key, value in first.items()
                     if key != "mask"}
        self.spec["label"] = ((), np.dtype(np.int32))
        self.next_epoch = 0
        self._rows = self._rows_of_process()
        self.reader = BatchReader(source, self.transforms, seed=self.seed, shuffle=self.shuffle,
                                  num_examples=self.num_examples, batch_size=self.batch_size, steps=len(self),
                                  rows=self._rows, spec=self.spec, mask=self.pad_last)
        self._stream: _Stream | None = None
        if self.worker_count:
            processes.start_server()  # its imports run now, in the background, not at the first batch

    def _labels(self, fn: str, labels) -> np.ndarray:
        if labels is None:
            labels = getattr(self.source, "labels", None)
        if labels is None:  # read every example once: the only way to know a bare dataset's labels
            labels = [self.source[i]["label"] for i in range(self.num_examples)]
        labels = np.asarray(labels)
        if labels.shape != (self.num_examples,):
            raise ValueError(f"{fn}: labels must have shape [N] = ({self.num_examples},), one per example, got "
                             f"{labels.shape}.")
        return labels

    def _rows_of_process(self) -> np.ndarray:
        """Positions, within a global batch, of the rows this process reads."""
        if self.sharding is not None and jax.process_count() > 1:
            shape = (self.batch_size,) + self.spec["image"][0]
            rows: set[int] = set()
            for index in self.sharding.addressable_devices_indices_map(shape).values():
                rows.update(range(*index[0].indices(self.batch_size)))
            return np.array(sorted(rows), dtype=np.int64)
        per_process = self.batch_size // self.process_count
        return np.arange(self.process_index * per_process, (self.process_index + 1) * per_process)

    @property
    def arrays(self) -> dict:
        """`{"image": jax.ShapeDtypeStruct([N, ...]), "label": [N]}`: the shapes, dtypes and labels that
        `check_dataset` reads (the images are never loaded whole)."""
        image_shape, image_dtype = self.spec["image"]
        return {"image": jax.ShapeDtypeStruct((self.num_examples,) + image_shape, image_dtype),
                "label": self.labels}

    def local_indices(self, epoch: int) -> np.ndarray:
        """This process's example indices of epoch `epoch`, `[len(self), local_batch_size]` (-1: padding)."""
        return local_indices(self.order(epoch), len(self), self.batch_size, self._rows)

    def dataset(self, epoch: int, *, start: int = 0) -> grain.IterDataset:
        """The Grain dataset of this process's batches from batch `start` of epoch `epoch` on, through the
        following epochs (without end: batch `k` of it is batch `(start + k) % len(self)` of epoch
        `epoch + (start + k) // len(self)`): the batches `epoch` yields, as a Grain pipeline to compose
        with Grain's own transformations (`epoch` reads them itself: see `jaxnets.data.processes`).

        `MapDataset.range(first, ...).map(read and transform)`, then `.to_iter_dataset(ReadOptions(
        read_threads, max(read_threads, prefetch)))` and, with workers, `.mp_prefetch(MultiprocessingOptions(
        worker_count, prefetch))`. Raises ValueError for `start` outside `[0, len(self)]`.
        """
        epoch = check_int("Loader.dataset", "epoch", epoch, minimum=0)
        start = check_int("Loader.dataset", "start", start, minimum=0, maximum=len(self))
        first = epoch * len(self) + start
        batches = grain.MapDataset.range(first, (epoch + _HORIZON_EPOCHS) * len(self)).map(_ReadBatch(self.reader))
        # Grain keeps `prefetch_buffer_size` batches in flight: at least one per thread, or threads idle.
        out = batches.to_iter_dataset(grain.ReadOptions(num_threads=self.read_threads,
                                                        prefetch_buffer_size=max(self.read_threads, self.prefetch)))
        if self.worker_count:
            _absl_flags_parsed()
            out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.worker_count,
                                                               per_worker_buffer_size=self.prefetch))
        return out

    def _read_epoch(self, epoch: int, start: int) -> Iterator[dict]:
        if self._stream is None or self._stream.position != (epoch, start):
            self.close()
            self._stream = _Stream(self, epoch, start)
        try:
            for _ in range(start, len(self)):
                yield self._place(self._stream.next(), self.batch_size)
        except Exception:
            self.close()  # an error (a file that fails to decode, ...): the next epoch starts a new stream
            raise

    def epoch(self, epoch: int, *, start: int = 0) -> EpochIterator:
        """An iterator over the batches of epoch `epoch` from its batch `start` (0-based) on.

        The Loader keeps one reader (threads, worker processes) running from epoch to epoch: after
        the last batch of epoch `e`, the batches of epoch `e + 1` are already being read, and
        `epoch(e + 1)` continues there. Asking for another position (an earlier epoch, a batch other than
        where the running one stands) closes it and starts a new one there (worker processes start again).
        See the class docstring for the batches.
        """
        self.dataset(epoch, start=start)  # validate the arguments now
        return EpochIterator(self._read_epoch(epoch, start), 0, name=f"jaxnets-Loader-epoch{epoch}")

    def close(self) -> None:
        """Stop the running reader (its threads and worker processes), if any."""
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            stream.close()

    def __getstate__(self) -> dict:  # what the worker processes get: no running stream, no sharding
        return {**self.__dict__, "_stream": None, "sharding": None}

    def __del__(self):
        self.close()

    def __repr__(self) -> str:
        return (f"Loader({self.source!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, seed={self.seed}, "
                f"worker_count={self.worker_count}): {len(self)} batches per epoch")
