"""Batches: a deterministic, resumable iterator over a dict of in-memory arrays.

The order of epoch `e` is a function of `(seed, e)` only, so a run resumed at epoch `e` sees
exactly the batches it would have seen. Batches can be placed on devices already sharded (data
parallelism), each host of a multi-host run yields only its part of the global batch, and a background
thread prepares the next batches while the current one is being used.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from jaxnets.checks import check_bool, check_int, check_positive_int
from jaxnets.data.reading import epoch_order
from jaxnets.data.validation import check_arrays

_END = object()


class _Failure:
    """An exception raised while producing a batch, carried to the consumer thread."""

    def __init__(self, error: BaseException):
        self.error = error


def _produce(batches: Iterator, out: queue.Queue, stop: threading.Event) -> None:
    """Worker: put each batch into `out`; give up as soon as `stop` is set (the consumer left)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.05)  # wake up regularly to notice `stop` while the queue is full
                return True
            except queue.Full:
                pass
        return False

    try:
        for batch in batches:
            if not put(batch):
                return
        put(_END)
    except BaseException as error:  # noqa: BLE001 - re-raised in the consumer
        put(_Failure(error))
    finally:
        batches.close()


class EpochIterator:
    """The batches of one epoch; with `prefetch > 0` they are produced ahead in a background thread.

    The thread keeps up to `prefetch` batches ready (`jax.device_put` returns before the copy has
    finished, so the host-to-device transfer of the next batches overlaps the computation on the
    current one). It stops when the epoch ends, when `close` is called, when a `with` block
    exits, or when the iterator is garbage collected (e.g. after `break` in a `for` loop), so no
    thread outlives its iterator. An exception raised while producing a batch is re-raised by `next`.
    """

    def __init__(self, batches: Iterator, prefetch: int, name: str):
        self._finished = False
        self._batches = batches
        self._thread = None
        if prefetch > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
            self._stop = threading.Event()
            # The thread gets the generator, the queue and the event, never `self`, so that dropping the
            # last reference to this iterator runs __del__ and stops the thread.
            self._thread = threading.Thread(target=_produce, args=(batches, self._queue, self._stop),
                                            name=name, daemon=True)
            self._batches = None
            self._thread.start()

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> dict:
        if self._finished:
            raise StopIteration
        if self._thread is None:
            try:
                return next(self._batches)
            except StopIteration:
                self._finished = True
                raise
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop producing batches and wait for the background thread to end."""
        self._finished = True
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        elif self._batches is not None:
            self._batches.close()

    def __enter__(self) -> EpochIterator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        if hasattr(self, "_finished"):  # __init__ may have failed before setting the attributes
            self.close()


def steps_per_epoch(num_examples: int, batch_size: int, *, drop_last: bool) -> int:
    """Batches (optimizer steps) in one epoch of `num_examples` examples: what `len(Batches(...))` is.

    `num_examples // batch_size` with `drop_last=True` (the incomplete last batch is dropped), else
    `ceil(num_examples / batch_size)` (it is kept). Use it to size per-step schedules
    (`decay_steps = epochs * steps_per_epoch(...)`).

    Args:
      num_examples: examples per epoch, an int >= 0.
      batch_size: examples per (global) batch, an int >= 1.
      drop_last: required; whether the incomplete last batch is dropped.
    Returns: the number of batches, an int >= 0.
    Raises:
      TypeError: a non-int count or size (bools included), a non-bool `drop_last`.
      ValueError: `num_examples < 0` or `batch_size < 1`.
    PyTorch: `len(torch.utils.data.DataLoader(dataset, batch_size, drop_last=drop_last))` (the same number).
    """
    fn = "steps_per_epoch"
    num_examples = check_int(fn, "num_examples", num_examples, minimum=0)
    batch_size = check_positive_int(fn, "batch_size", batch_size)
    if check_bool(fn, "drop_last", drop_last):
        return num_examples // batch_size
    return -(-num_examples // batch_size)  # ceil in integers, exact for any size


class Batches:
    """Iterate over batches of a dict of arrays, reproducibly, optionally sharded across devices.

    Example::

        batches = Batches(train, 128, seed=0)             # train = {"image": ..., "label": ...}
        for epoch in range(start_epoch, epochs):
            for batch in batches.epoch(epoch):            # same batches after a resume
                state, metrics = step(state, batch)

    Order: epoch `e` visits every example once in the order ``numpy.random.default_rng([seed, e])
    .permutation(N)` (or `0..N-1` with `shuffle=False``), cut into consecutive batches, so it
    depends only on `(seed, e)`. `iter(batches)` (a bare `for batch in batches`) gives epoch
    `batches.next_epoch` and then increments that counter: successive loops see epochs 0, 1, 2, ...
    Prefer `epoch` when resuming; or set `next_epoch`.

    Placement: with `sharding=None` batches are dicts of numpy arrays (host memory). With a
    `jax.sharding.Sharding` (e.g. `NamedSharding(mesh, PartitionSpec("batch"))`, built by
    `for_devices`), each array is put on the devices with `jax.device_put(batch, sharding)`,
    already split along its first axis. Transfers are asynchronous and run in the prefetch thread.

    The last batch: with `drop_last=True` (the default) an incomplete last batch is dropped, so every
    batch is full. `drop_last=False` keeps it, as `torch.utils.data.DataLoader` does by default (then
    `len(batches)` equals torch's and per-step schedules stay aligned; see `steps_per_epoch`):
    unpadded (`pad_last=False`, a smaller batch, which makes a compiled step compile a second time and
    must divide over the processes and the sharding's devices), or `pad_last=True`: padded with zero rows
    to the full `batch_size` and marked by a boolean `"mask"` ([batch], False on the padding), which the
    steps of `jaxnets.train` leave out of the loss, the gradient, the metrics and the BatchNorm
    statistics. With `pad_last=True` EVERY batch carries a `"mask"` (all True but the last), so the
    step compiles once; an existing `"mask"` array is kept (and padded with False).

    Multi-host: `batch_size` is the GLOBAL batch. When `jax.process_count() > 1` (or when
    `process_index`/`process_count` are given, to test the slicing on one host), every process
    draws the same global batch and keeps only its own rows: process `p` of `P` keeps rows
    `[p * B/P, (p + 1) * B/P)`, or with a sharding the rows its addressable devices hold, and the
    global array is assembled with `jax.make_array_from_process_local_data`.

    Args:
      arrays: dict of arrays with the same leading dimension `N` (jax arrays are copied to host once).
      batch_size: examples per (global) batch.
      shuffle: shuffle every epoch (True) or keep the stored order.
      seed: non-negative int; with the epoch number it determines the order.
      drop_last: drop the final incomplete batch (True), or keep it (False, torch's default).
      pad_last: with `drop_last=False`, pad the final incomplete batch to `batch_size` rows and add a
        `"mask"` to every batch (True), or yield it smaller (False). With `drop_last=True` every batch
        is full and `pad_last=True` only adds the (all True) `"mask"`.
      sharding: None (numpy batches) or the `jax.sharding.Sharding` of every batch array.
      prefetch: batches produced ahead in a background thread; 0 produces them on demand, in the caller.
      process_index, process_count: this process and the number of processes; default
        `jax.process_index()` and `jax.process_count()`. Give both or neither.
    Raises:
      TypeError: naming `Batches` and the argument: `arrays` not a dict, a non-int `batch_size`/
        `seed`/`prefetch`/`process_index`/`process_count`, a non-bool `shuffle`/`drop_last`/
        `pad_last`, a `sharding` that is not a `jax.sharding.Sharding`.
      ValueError: naming `Batches` and the argument: an empty `arrays`, arrays of different lengths or
        scalars, `batch_size <= 0`, `batch_size > N` with `drop_last=True`, `batch_size` (or an
        unpadded last batch) not divisible by `process_count` or not split by the sharding, a negative
        `seed`/`prefetch`, `process_index` out of range.
    PyTorch: `torch.utils.data.DataLoader` with a `DistributedSampler` and `sampler.set_epoch(e)`
      (same idea, different random numbers).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True, pad_last: bool = False, sharding: Sharding | None = None,
                 prefetch: int = 2, process_index: int | None = None, process_count: int | None = None):
        fn = "Batches"
        self._arrays = check_arrays(fn, "arrays", arrays)
        self.num_examples = len(next(iter(self._arrays.values())))
        self.batch_size = check_positive_int(fn, "batch_size", batch_size)
        self.shuffle = check_bool(fn, "shuffle", shuffle)
        self.seed = check_int(fn, "seed", seed, minimum=0)
        self.drop_last = check_bool(fn, "drop_last", drop_last)
        self.pad_last = check_bool(fn, "pad_last", pad_last)
        self.prefetch = check_int(fn, "prefetch", prefetch, minimum=0)
        if drop_last and self.batch_size > self.num_examples:
            raise ValueError(f"Batches: batch_size {self.batch_size} is larger than the {self.num_examples} "
                             f"examples, so drop_last=True would yield no batch; use a smaller batch_size or "
                             f"drop_last=False.")
        if (process_index is None) != (process_count is None):
            raise ValueError(f"Batches: give both process_index and process_count or neither, got "
                             f"process_index={process_index}, process_count={process_count}.")
        simulated = process_count is not None
        if simulated:
            self.process_count = check_positive_int(fn, "process_count", process_count)
            self.process_index = check_int(fn, "process_index", process_index, minimum=0)
        else:
            self.process_count, self.process_index = jax.process_count(), jax.process_index()
        if self.process_index >= self.process_count:
            raise ValueError(f"Batches: process_index must be in [0, {self.process_count}), got "
                             f"{self.process_index}.")
        if sharding is not None and not isinstance(sharding, Sharding):
            raise TypeError(f"Batches: sharding must be a jax.sharding.Sharding or None, got "
                            f"{type(sharding).__name__}.")
        if sharding is not None and simulated and self.process_count != jax.process_count():
            raise ValueError(f"Batches: process_count={self.process_count} differs from jax.process_count()="
                             f"{jax.process_count()}; simulated processes cannot assemble sharded global arrays "
                             f"(pass sharding=None to test the slicing).")
        self.sharding = sharding
        self.next_epoch = 0
        # The sizes of the global batches an epoch yields: full ones and, unpadded, a short last one.
        sizes = {self.batch_size} if self.num_examples >= self.batch_size or self.pad_last else set()
        if not self.drop_last and not self.pad_last and self.num_examples % self.batch_size:
            sizes.add(self.num_examples % self.batch_size)
        for size in sorted(sizes, reverse=True):
            self._check_batch_size(size)
        self._rows = {size: self._local_rows(size) for size in sizes}

    def _check_batch_size(self, size: int) -> None:
        which = ("batch_size" if size == self.batch_size
                 else f"the last batch ({size} examples, drop_last=False, pad_last=False)")
        if size % self.process_count:
            raise ValueError(f"Batches: {which} must be divisible by process_count={self.process_count} (it is "
                             f"the global batch, split evenly between processes), got {size}.")
        if self.sharding is not None:
            for key, value in self._arrays.items():
                try:
                    self.sharding.shard_shape((size,) + value.shape[1:])
                except Exception as error:  # IndivisibleError and friends: a bad sharding for this shape
                    raise ValueError(f"Batches: {which} cannot be split by the sharding: array {key!r} of batch "
                                     f"shape {(size,) + value.shape[1:]} ({error}). Use a batch size divisible "
                                     f"by the number of devices (or pad_last=True, or drop_last=True).") from error

    def _local_rows(self, size: int) -> np.ndarray:
        """Positions, within a global batch of `size` examples, of the rows this process supplies."""
        if self.sharding is not None and jax.process_count() > 1:
            key, value = next(iter(self._arrays.items()))
            rows: set[int] = set()
            for index in self.sharding.addressable_devices_indices_map((size,) + value.shape[1:]).values():
                rows.update(range(*index[0].indices(size)))
            return np.array(sorted(rows), dtype=np.int64)
        per_process = size // self.process_count
        return np.arange(self.process_index * per_process, (self.process_index + 1) * per_process)

    @classmethod
    def for_devices(cls, arrays: Mapping[str, np.ndarray], batch_size: int, *,
                    devices: Sequence[jax.Device] | None = None, **kwargs) -> Batches:
        """Batches sharded along their first axis over a 1-D device mesh with axis name `"batch"`.

        Args:
          devices: the devices of the mesh; default `jax.devices()`, which in a single-process run are
            the local devices and in a multi-host run all devices of all processes (as the global batch
            needs).
          arrays, batch_size, kwargs: as `Batches` (all but `sharding`).
        Returns: `Batches(arrays, batch_size, sharding=NamedSharding(mesh, PartitionSpec("batch")), ...)`.
        """
        devices = jax.devices() if devices is None else list(devices)
        mesh = Mesh(np.asarray(devices), ("batch",))
        return cls(arrays, batch_size, sharding=NamedSharding(mesh, PartitionSpec("batch")), **kwargs)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The whole dataset, host numpy arrays `[N, ...]` in their stored order (a new dict, the same arrays)."""
        return dict(self._arrays)

    @property
    def local_batch_size(self) -> int:
        """Examples per full batch on this process: `batch_size / process_count`."""
        return self.batch_size // self.process_count

    def __len__(self) -> int:
        """Batches per epoch: `steps_per_epoch(num_examples, batch_size, drop_last=drop_last)`."""
        return steps_per_epoch(self.num_examples, self.batch_size, drop_last=self.drop_last)

    def order(self, epoch: int) -> np.ndarray:
        """The example indices of epoch `epoch` in visiting order, [N] (before dropping the last batch)."""
        epoch = check_int("Batches.order", "epoch", epoch, minimum=0)
        return epoch_order(self.num_examples, self.seed, epoch, shuffle=self.shuffle)

    def _generate(self, epoch: int) -> Iterator[dict]:
        order = self.order(epoch)
        for b in range(len(self)):
            global_batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            if not self.pad_last:
                local = global_batch[self._rows[len(global_batch)]]
                yield self._place({key: value[local] for key, value in self._arrays.items()}, len(global_batch))
                continue
            # Padded rows are index -1: they take row 0's place, then are zeroed and masked out.
            padded = np.full(self.batch_size, -1, np.int64)
            padded[:len(global_batch)] = global_batch
            local = padded[self._rows[self.batch_size]]
            valid = local >= 0
            rows = np.where(valid, local, 0)
            batch = {key: value[rows] for key, value in self._arrays.items()}
            for value in batch.values():
                value[~valid] = 0  # zeros, as jaxnets.train's put_batch pads
            batch["mask"] = valid & batch["mask"].astype(bool) if "mask" in batch else valid
            yield self._place(batch, self.batch_size)

    def _place(self, batch: dict, size: int) -> dict:
        if self.sharding is None:
            return batch
        if jax.process_count() > 1:
            return {key: jax.make_array_from_process_local_data(self.sharding, value, (size,) + value.shape[1:])
                    for key, value in batch.items()}
        return jax.device_put(batch, self.sharding)

    def epoch(self, epoch: int) -> EpochIterator:
        """An iterator over the batches of epoch `epoch` (a non-negative int); see the class docstring.

        Returns: an `EpochIterator` of dicts with the keys of `arrays` (and `"mask"`, bool, with
          `pad_last=True`), each array of shape `[local_batch_size, ...]` (numpy) or, with a sharding, a
          global `jax.Array` of shape `[batch_size, ...]`; an unpadded last batch has fewer rows.
        """
        self.order(epoch)  # validate the argument now, not in the background thread
        return EpochIterator(self._generate(epoch), self.prefetch, name=f"jaxnets-Batches-epoch{epoch}")

    def __iter__(self) -> EpochIterator:
        epoch = self.next_epoch
        self.next_epoch += 1
        return self.epoch(epoch)
