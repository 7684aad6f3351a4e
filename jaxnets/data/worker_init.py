"""Imported by the fork server of `Loader`'s worker processes (`processes.PRELOAD`), never by a program:
marks the process as a worker (so `transforms` does not import grain, and with it jax), then imports what
a worker runs, once, for every worker forked from the server."""
from jaxnets.data import processes

processes.mark_worker_process()

import PIL.Image  # noqa: E402,F401  decoding, in jaxnets.data.sources
from jaxnets.data import reading, sources, transforms  # noqa: E402,F401
