"""A per-epoch progress bar (tqdm) showing the running loss, accuracy and throughput; for a population,
the best, median and worst member and the summed throughput (`population_postfix`).

The bar only draws what the fit loop hands it: the loop fetches metric sums from the device now and
then (not after every step, see `jaxnets.train.fit`), so the bar never adds a host round-trip.
"""
from __future__ import annotations

import sys

import numpy as np
from tqdm import tqdm

__all__ = ["ProgressBar", "progress_enabled", "population_postfix"]


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

    def update(self, done: int, *, loss, accuracy, images_per_sec: float) -> None:
        """Show `done` steps finished, with the running mean loss, accuracy (a fraction) and throughput.

        For a population, `loss` and `accuracy` are sequences (or 1-D arrays) of R values, one per member,
        and `images_per_sec` is summed over the members: the bar then shows `population_postfix`.
        """
        if self._bar is None:
            return
        if np.ndim(loss) > 0:
            text = population_postfix(loss, accuracy, images_per_sec)
        else:
            text = f"loss={loss:.4f}, acc={100 * accuracy:.2f}%, {images_per_sec:.0f} img/s"
        self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(done - self._bar.n)

    def close(self, summary: str | None = None) -> None:
        """Finish the bar, leaving it on screen with `summary` (e.g. the epoch's validation metrics) appended."""
        if self._bar is not None:
            if summary:
                self._bar.set_postfix_str(f"{self._bar.postfix}, {summary}" if self._bar.postfix else summary,
                                          refresh=False)
            self._bar.close()
            self._bar = None


def population_postfix(loss, accuracy, images_per_sec: float | None = None) -> str:
    """The bar's text for a population: the best, median and worst member by running loss, each with its
    loss and accuracy, and the summed throughput:
    `best 0.1021 (96.9%), median 0.1534 (95.2%), worst 0.4410 (86.0%) of 15, 1.2e+04 img/s`.

    The median member is a member (the lower middle one for an even count), not an average. Members whose
    loss is not finite (diverged, or stopped with nothing to show) are left out and counted (`2 diverged`).

    Args:
      loss, accuracy: R running values each (accuracy as a fraction).
      images_per_sec: throughput summed over the members, or None to leave it out.
    Returns: one line of text.
    """
    loss, accuracy = np.asarray(loss, float).reshape(-1), np.asarray(accuracy, float).reshape(-1)
    finite = np.flatnonzero(np.isfinite(loss))
    bad = loss.size - finite.size
    tail = (f", {bad} diverged" if bad else "") + ("" if images_per_sec is None else f", {images_per_sec:.0f} img/s")
    if not finite.size:
        return f"no finite loss among {loss.size} members" + tail
    order = finite[np.argsort(loss[finite], kind="stable")]  # ascending loss: best first
    picks = (("best", order[0]), ("median", order[(order.size - 1) // 2]), ("worst", order[-1]))
    members = ", ".join(f"{name} {loss[r]:.4f} ({100 * accuracy[r]:.1f}%)" for name, r in picks)
    return f"{members} of {finite.size}{tail}"
