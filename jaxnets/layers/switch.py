"""`Switch`: a process-wide on/off choice between two formulations of a layer, read at trace time.

Layers with a fast formulation keep the plain one reachable for tests and benchmarks that compare
the two (same numbers, other XLA kernels): `conv.explicit_padding`, `normalization.closed_form_derivative`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from jaxnets.checks import check_bool


class Switch:
    """On by default; `with switch.set(False): ...` turns it off for the block and restores it after.

    `enabled` is read when a layer is TRACED: a function jitted inside the block keeps the choice.
    """

    def __init__(self, name: str):
        self.name = name
        self.enabled = True

    @contextlib.contextmanager
    def set(self, enabled: bool) -> Iterator[None]:
        enabled, previous = check_bool(self.name, "enabled", enabled), self.enabled
        self.enabled = enabled
        try:
            yield
        finally:
            self.enabled = previous
