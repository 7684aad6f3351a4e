"""A per-epoch progress bar (tqdm) showing the running loss, accuracy and throughput.

The bar only draws what the fit loop hands it: the loop fetches metric sums from the device now and
then (not after every step, see `jaxnets.train.fit`), so the bar never adds a host round-trip.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

__all__ = ["ProgressBar", "progress_enabled"]


def progress_enabled(progress: bool, stream=None) -> bool:
    """Whether to draw: `progress` is True and the stream (default `sys.stderr`) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(progress) and callable(isatty) and bool(isatty())


class ProgressBar:
    """One epoch's bar: `Epoch 3/10 |#####     | 35/70 [00:02<00:02, loss=0.1234, acc=96.41%, 1.2e+04 img/s]`.

    Args:
      total: number of steps in the epoch.
      epoch: 1-based epoch number; `epochs`: total epochs (for the label).
      enabled: draw (True) or do nothing at all (False): every method is then a no-op.
      stream: where to draw, default `sys.stderr`.
    """

    def __init__(self, total: int, *, epoch: int, epochs: int, enabled: bool, stream=None):
        self._bar = None
        if enabled:
            self._bar = tqdm(total=total, desc=f"Epoch {epoch}/{epochs}", unit="step", leave=True,
                             file=sys.stderr if stream is None else stream, dynamic_ncols=True)

    def update(self, done: int, *, loss: float, accuracy: float, images_per_sec: float) -> None:
        """Show `done` steps finished, with the running mean loss, accuracy (a fraction) and throughput."""
        if self._bar is None:
            return
        self._bar.set_postfix_str(f"loss={loss:.4f}, acc={100 * accuracy:.2f}%, {images_per_sec:.0f} img/s",
                                  refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self, summary: str | None = None) -> None:
        """Finish the bar, leaving it on screen with `summary` (e.g. the epoch's validation metrics) appended."""
        if self._bar is not None:
            if summary:
                self._bar.set_postfix_str(f"{self._bar.postfix}, {summary}" if self._bar.postfix else summary,
                                          refresh=False)
            self._bar.close()
            self._bar = None
