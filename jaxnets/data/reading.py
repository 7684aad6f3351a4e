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

__all__ = ["epoch_order", "local_indices", "example_rng", "apply_transforms", "BatchReader", "read_ahead",
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

    def __call__(self, k: int) -> dict:
        epoch, b = divmod(int(k), self.steps)
        table = self._table  # one read: threads may replace it meanwhile
        if table[0] != epoch:
            table = self._table = (epoch, self.indices(epoch))
        indices = table[1][b]
        batch = {key: np.zeros((len(indices),) + shape, dtype) for key, (shape, dtype) in self.spec.items()}
        for row, index in enumerate(indices):
            if index < 0:
                continue  # a padding row stays zero (and is masked out)
            element = self.example(epoch, int(index))
            for key, (shape, _) in self.spec.items():
                value = np.asarray(element[key])
                if value.shape != shape:
                    raise ValueError(f"Loader: example {int(index)} has {key} of shape {value.shape}, but example "
                                     f"0's is {shape}; every example of a batch must have the same shape: add "
                                     f"transforms that fix it (e.g. transforms.Resize and transforms.CenterCrop, "
                                     f"or transforms.RandomResizedCrop).")
                batch[key][row] = value
        if self.mask:
            batch["mask"] = indices >= 0
        return batch


def read_ahead(read, numbers: Iterable[int], *, threads: int, ahead: int) -> Iterator:
    """`read(k)` for each `k` of `numbers`, in order, computed by `threads` threads up to `ahead` items ahead
    (what Grain's `ReadOptions(num_threads, prefetch_buffer_size)` does in the process that reads)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="jaxnets-Loader-read")
    pending: collections.deque = collections.deque()
    try:
        for k in numbers:
            pending.append(pool.submit(read, k))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class WorkerBatches:
    """What worker process `w` of `workers` runs (`processes.WorkerStream`): batches `first + w`,
    `first + w + workers`, ... (before `end`) of the stream, read by `threads` threads, `ahead` ahead."""

    def __init__(self, reader: BatchReader, first: int, end: int, workers: int, *, threads: int, ahead: int):
        self.reader, self.first, self.end, self.workers = reader, first, end, workers
        self.threads, self.ahead = threads, ahead

    def __call__(self, worker: int) -> Iterator[dict]:
        return read_ahead(self.reader, range(self.first + worker, self.end, self.workers), threads=self.threads,
                          ahead=self.ahead)
