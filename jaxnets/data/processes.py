"""Worker processes of `Loader`: forks of a fork server that imports numpy, Pillow and the reading code only.

Grain's `mp_prefetch` starts each worker with the "spawn" method (fixed in Grain): a fresh Python that
imports grain (which imports jax and orbax), then jaxnets (flax, optax) to unpickle the pipeline, before it
reads a batch; every time workers start, each pays those imports again, on the same cores. Forking the
training process instead (torch's default) is unsafe once JAX has started XLA's threads: a fork copies
only the calling thread, and locks held by the others stay held in the child.

A fork server (`multiprocessing`'s "forkserver" start method, on Linux and macOS) is the safe middle: one
fresh Python per session imports `PRELOAD` once (`jaxnets.data.worker_init`: numpy, Pillow, the sources,
transforms and reader; no jax, flax or grain, so no thread of JAX's exists to be lost in a fork) and every
worker is a fork of it, with those modules already loaded. `start_server()`
launches it without waiting (a `Loader` with workers calls it when constructed, so its imports overlap
whatever the program does before the first epoch); later workers, of any Loader, start in milliseconds.
Where "forkserver" is not available (Windows), workers are spawned.

Each worker runs `iterate(worker)` (a picklable callable, sent with cloudpickle like Grain's pipelines)
and puts what it yields in its own bounded queue; `WorkerStream.next()` takes element `j` from worker
`j % workers`, so the merged order does not depend on which worker is faster.
"""
from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections.abc import Callable, Iterable

import cloudpickle

__all__ = ["PRELOAD", "context", "start_server", "WorkerStream", "mark_worker_process", "in_worker_process"]

# What the fork server imports before it forks its first worker: the module marks the server (and so every
# worker) as a worker process, then imports what workers run: numpy, Pillow, the sources and transforms.
PRELOAD = ["jaxnets.data.worker_init"]
_POLL_S = 0.1  # how often a blocked worker checks for a stop, and the reader for a dead worker
_in_worker = False


def mark_worker_process() -> None:
    """Declare this process a worker process (see `in_worker_process`); called in the fork server and in
    each worker before it unpickles what it runs."""
    global _in_worker
    _in_worker = True


def in_worker_process() -> bool:
    """Whether this process is a `Loader` worker (or their fork server): there `jaxnets.data.transforms`
    does not import grain, so that reading needs numpy and Pillow only."""
    return _in_worker


def context() -> multiprocessing.context.BaseContext:
    """The start method of the workers: "forkserver" where the platform has it, else "spawn"."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def start_server() -> None:
    """Launch the fork server if it is not running (returns at once: its imports run in the background).

    Sets the server's preloaded modules to `PRELOAD` (`multiprocessing.set_forkserver_preload`, a
    process-wide setting, read when the server starts) unless a server is already running, which is
    then used as it is. No-op where workers are spawned.
    """
    ctx = context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    if not _server_running():
        ctx.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


def _server_running() -> bool:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None) is not None


def _put(out, item, stop) -> bool:
    """Put `item` in `out`, waiting for room; False (not put) once `stop` is set."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            pass
    return False


def _work(payload: bytes, worker: int, out, stop) -> None:
    """A worker's main: put every element of `iterate(worker)` in `out` until `stop` is set; on an error,
    put `("error", exception, traceback)` and end."""
    mark_worker_process()  # where the fork server did not (spawned, or another program's server)
    try:
        for element in cloudpickle.loads(payload)(worker):
            if not _put(out, ("ok", element), stop):
                break
    except BaseException as error:  # noqa: BLE001  reported to the reader, re-raised there
        text = traceback.format_exc()
        try:
            cloudpickle.dumps(error)
        except Exception:  # noqa: BLE001  an exception that does not pickle: its type and message survive
            error = RuntimeError(f"{type(error).__name__}: {error}")
        _put(out, ("error", error, text), stop)
        return
    out.cancel_join_thread()  # stopped: exit without flushing batches nobody will read


class WorkerStream:
    """Elements of `iterate(0)`, `iterate(1)`, ... `iterate(workers - 1)`, computed in worker processes,
    merged round-robin: element `j` is element `j // workers` of `iterate(j % workers)`.

    Args:
      iterate: a picklable (by cloudpickle) callable `worker -> iterable`, run in each worker process.
      workers: the number of worker processes (>= 1).
      buffer: elements each worker may have ready before it waits for the reader.
      name: what to call the workers in messages.
    Raises (from `next`): the exception an `iterate` raised (its worker's traceback added as a note);
      RuntimeError if a worker process died without one.
    """

    def __init__(self, iterate: Callable[[int], Iterable], workers: int, *, buffer: int, name: str = "worker"):
        ctx = context()
        payload = cloudpickle.dumps(iterate)
        self.name, self.turn, self.closed = name, 0, False
        self.stop = ctx.Event()
        self.queues = [ctx.Queue(maxsize=buffer) for _ in range(workers)]
        self.processes = [ctx.Process(target=_work, args=(payload, i, self.queues[i], self.stop), daemon=True,
                                      name=f"{name}-{i}") for i in range(workers)]
        for process in self.processes:
            process.start()

    def next(self):
        """The next element, in round-robin order over the workers (waits for it)."""
        i = self.turn
        item = self._get(i)
        self.turn = (i + 1) % len(self.processes)
        if item[0] == "error":
            _, error, text = item
            error.add_note(f"(raised in {self.name} process {i}:\n{text})")
            raise error
        return item[1]

    def _get(self, i: int):
        q, process = self.queues[i], self.processes[i]
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if process.is_alive():
                    continue
            try:  # it ended: what it put before it ended is still readable
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                raise RuntimeError(f"{self.name} process {i} ended (exit code {process.exitcode}) without an "
                                   f"error message; it may have been killed (out of memory?).") from None

    def close(self) -> None:
        """Stop the workers (they finish the element in hand) and wait for them; kill any that do not end."""
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        for process in self.processes:
            process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
                process.join()
        for q in self.queues:
            q.close()
            q.cancel_join_thread()
