"""What a `Loader` runs to read a batch, importable without jax, flax or grain: its worker processes import
only this, numpy, Pillow and the sources and transforms they are given.

A batch is a pure function of its number `k` in the loader's stream (epoch `k // steps`, batch `k % steps`):
the epoch's order (`epoch_order`), this process's rows of it (`local_indices`), each example read from
the source and transformed with the generator `example_rng(seed, epoch, index)`. So any thread or process
may read any batch, and the batches do not depend on how many there are.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["epoch_order", "local_indices", "example_rng", "apply_transforms", "BatchReader", "read_batches",
           "WorkerBatches"]

_THREAD = threading.local()  # each reading thread's Philox generator, re-keyed per example by example_rng


def epoch_order(num_examples: int, seed: int, epoch: int, *, shuffle: bool) -> np.ndarray:
    """The example indices of epoch `epoch` in visiting order, `[num_examples]`:
    `numpy.random.default_rng([seed, epoch]).permutation(num_examples)`, or `0 .. N-1` without shuffle."""
    if not shuffle:
        return np.arange(num_examples)
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def local_indices(order: np.ndarray, steps: int, batch_size: int, rows: np.ndarray) -> np.ndarray:
    """The rows `rows` of the `steps` global batches of `batch_size` that cut `order`, `[steps, len(rows)]`;
    positions past the end of `order` (the padding of an incomplete last batch) are -1."""
    padded = np.full(steps * batch_size, -1, np.int64)
    padded[:min(len(order), len(padded))] = order[:len(padded)]
    return padded.reshape(steps, batch_size)[:, rows]


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of the random transforms of example `index` in epoch `epoch`: numpy's counter-based
    Philox with key `(seed, epoch)` and counter `(0, 0, index, 0)`.

    Each example gets its own stream (2**128 draws apart), a function of `(seed, epoch, index)` only, so
    the augmentation does not depend on the example's position, the batch, the worker or the process.
    Re-keying this thread's one generator costs a few microseconds, where building a new one
    (`default_rng([seed, epoch, index])`, through a SeedSequence) costs tens: a share of the time of
    decoding a small image. The generator is reused by the next call in the same thread: draw from it
    before asking for the next example's.

    Args: seed, epoch, index: non-negative ints below 2**64.
    Returns: a `numpy.random.Generator`.
    """
    cached = getattr(_THREAD, "philox", None)
    if cached is None:
        bit_generator = np.random.Philox(key=0)
        cached = _THREAD.philox = (bit_generator, np.random.Generator(bit_generator), bit_generator.state)
    bit_generator, generator, state = cached
    state["state"]["key"][:] = (seed, epoch)
    state["state"]["counter"][:] = (0, 0, index, 0)
    state.update(buffer_pos=4, has_uint32=0, uinteger=0)  # nothing buffered from the previous example
    bit_generator.state = state
    return generator


def apply_transforms(element, transforms: Sequence, rng: np.random.Generator):
    """Apply `transforms` in order: one with a `random_map` method (a `grain.transforms.RandomMap`) as
    `t.random_map(element, rng)`, one with a `map` method (a `grain.transforms.Map`) as `t.map(element)`,
    any other callable as `t(element)`.

    By method rather than by class, so that a worker process need not import grain to tell them apart."""
    for transform in transforms:
        if callable(getattr(transform, "random_map", None)):
            element = transform.random_map(element, rng)
        elif callable(getattr(transform, "map", None)):
            element = transform.map(element)
        else:
            element = transform(element)
    return element


class BatchReader:
    """Batch `k` of a loader's stream, read and transformed: `reader(k)` (this process's rows).

    Args:
      source: the random-access source.
      transforms: the example transforms (see `apply_transforms`).
      seed, shuffle, num_examples, batch_size: the epoch order (`epoch_order`) and its global batches.
      steps: batches per epoch.
      rows: this process's rows of a global batch.
      spec: `{key: (shape, dtype)}` of an example's arrays: the batch's arrays, `[len(rows), *shape]`.
      mask: add `"mask"` (False on padding rows) to every batch.
    """

    def __init__(self, source, transforms: Sequence, *, seed: int, shuffle: bool, num_examples: int,
                 batch_size: int, steps: int, rows: np.ndarray, spec: Mapping, mask: bool):
        self.source, self.transforms = source, tuple(transforms)
        self.seed, self.shuffle, self.num_examples, self.batch_size = seed, shuffle, num_examples, batch_size
        self.steps, self.rows, self.spec, self.mask = steps, rows, dict(spec), mask
        self._table = (None, None)  # (epoch, its index table): computed once per epoch, swapped atomically

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_table": (None, None)}

    def indices(self, epoch: int) -> np.ndarray:
        """This process's example indices of epoch `epoch`, `[steps, len(rows)]` (-1: padding)."""
        order = epoch_order(self.num_examples, self.seed, epoch, shuffle=self.shuffle)
        return local_indices(order, self.steps, self.batch_size, self.rows)

    def example(self, epoch: int, index: int) -> dict:
        element = self.source[index]
        if not isinstance(element, Mapping) or "image" not in element or "label" not in element:
            raise TypeError(f"Loader: source[{index}] must be a dict with 'image' [H, W, C] and 'label', got "
                            f"{type(element).__name__}.")
        return apply_transforms(element, self.transforms, example_rng(self.seed, epoch, index))

    def start(self, k: int) -> tuple[dict, int, np.ndarray]:
        """Batch `k`, not yet read: `(batch, epoch, indices)`, its arrays zeros (and its `"mask"`), to be
        filled by `fill`."""
        epoch, b = divmod(int(k), self.steps)
        table = self._table  # one read: threads may replace it meanwhile
        if table[0] != epoch:
            table = self._table = (epoch, self.indices(epoch))
        indices = table[1][b]
        batch = {key: np.zeros((len(indices),) + shape, dtype) for key, (shape, dtype) in self.spec.items()}
        if self.mask:
            batch["mask"] = indices >= 0
        return batch, epoch, indices

    def fill(self, batch: dict, epoch: int, indices: np.ndarray, lo: int, hi: int) -> None:
        """Read and transform the examples of rows `[lo, hi)` of a batch from `start` into its arrays."""
        for row in range(lo, hi):
            index = int(indices[row])
            if index < 0:
                continue  # a padding row stays zero (and is masked out)
            element = self.example(epoch, index)
            for key, (shape, _) in self.spec.items():
                value = np.asarray(element[key])
                if value.shape != shape:
                    raise ValueError(f"Loader: example {index} has {key} of shape {value.shape}, but example "
                                     f"0's is {shape}; every example of a batch must have the same shape: add "
                                     f"transforms that fix it (e.g. transforms.Resize and transforms.CenterCrop, "
                                     f"or transforms.RandomResizedCrop).")
                batch[key][row] = value

    def __call__(self, k: int) -> dict:
        """Batch `k`, read in this thread."""
        batch, epoch, indices = self.start(k)
        self.fill(batch, epoch, indices, 0, len(indices))
        return batch


def read_batches(reader: BatchReader, numbers: Iterable[int], *, threads: int, ahead: int) -> Iterator[dict]:
    """The batches `reader(k)` for `k` in `numbers`, in order, read by `threads` threads, up to `ahead`
    batches in flight.

    Each batch's rows are split into `threads` parts, one task each, queued in batch order: the threads
    work on the earliest batch together, so the first batch is ready after one batch's work spread over the
    threads (where one batch per thread, Grain's `to_iter_dataset` way, has every thread's batch progress at
    once and the first finish late on a busy machine), and later batches are read ahead as before.
    An exception raised reading batch `k` is raised when batch `k` is reached.
    """
    pool = ThreadPoolExecutor(threads, thread_name_prefix="jaxnets-Loader-read")
    pending: collections.deque = collections.deque()

    def finished(batch, tasks):
        for task in tasks:
            task.result()
        return batch

    try:
        for k in numbers:
            batch, epoch, indices = reader.start(k)
            bounds = np.linspace(0, len(indices), min(threads, len(indices)) + 1).astype(int)
            pending.append((batch, [pool.submit(reader.fill, batch, epoch, indices, int(lo), int(hi))
                                    for lo, hi in zip(bounds[:-1], bounds[1:])]))
            if len(pending) >= ahead:
                yield finished(*pending.popleft())
        while pending:
            yield finished(*pending.popleft())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class WorkerBatches:
    """What worker process `w` of `workers` runs (`processes.WorkerStream`): batches `first + w`,
    `first + w + workers`, ... (before `end`) of the stream, `read_batches(..., threads, ahead)`."""

    def __init__(self, reader: BatchReader, first: int, end: int, workers: int, *, threads: int, ahead: int):
        self.reader, self.first, self.end, self.workers = reader, first, end, workers
        self.threads, self.ahead = threads, ahead

    def __call__(self, worker: int) -> Iterator[dict]:
        return read_batches(self.reader, range(self.first + worker, self.end, self.workers), threads=self.threads,
                            ahead=self.ahead)
