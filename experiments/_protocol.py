"""The experiments' protocol and verdict rule, written once (experiments/README.md quotes them).

Protocol: every compared setting runs with the same seeds (``SEEDS``, at least 5), so seed s gives each
setting the same initial weights and data order; a claim about "A beats B" is judged on the per-seed
differences, which removes the noise the settings share. Every reported number is a mean +- standard error
over seeds (``describe``), with the per-seed values in results.json.

Verdict rule (``verdict``): a claim that setting B is better (or larger, or faster) than setting A by at
least ``min_effect`` is

- **reproduced** when the 95% Student-t interval of the paired differences lies entirely on the claimed
  side of zero AND the mean difference is at least ``min_effect`` (the size the notes describe);
- **partly** when the mean difference points the claimed way but the interval reaches zero or the effect
  is smaller than ``min_effect``;
- **not reproduced** when the mean difference is zero or points the other way;
- **not tested** when fewer than 2 paired seeds are available (no interval) -- a script may also state
  "not tested" for a claim its setup cannot address, with the reason.

A claim of NO difference ("the choice does not change the final error", ``direction="same"``) needs a
margin: the largest |b - a| the claim tolerates, stated by the script as ``min_effect``. It is

- **reproduced** when the whole 95% interval lies within +-``min_effect`` (an equivalence test);
- **not reproduced** when the interval excludes zero and |mean| is at least ``min_effect`` (a difference
  of the size the claim rules out, detected);
- **partly** otherwise (the data can neither confirm nor exclude a difference that large).

    from experiments import _protocol as protocol
    d = protocol.paired(errors_plain, errors_bn)       # per-seed b - a: mean, sem, ci95, n, differences
    protocol.verdict(d, direction="lower", min_effect=0.01)   # "reproduced" | "partly" | ...
    protocol.describe(errors_bn, scale=100, unit="%")  # "6.3 +- 0.4%"
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxnets.train import stats

SEEDS = (0, 1, 2, 3, 4)
VERDICTS = ("reproduced", "partly", "not reproduced", "not tested")
_DIRECTIONS = {"higher": 1.0, "lower": -1.0, "same": 0.0}


def estimate(values: Sequence[float]) -> dict:
    """``{"n", "mean", "std", "sem", "ci95", "values"}`` of ``values`` (one number per seed), JSON-ready.

    Non-finite values (a diverged seed) are left out of the statistics and counted in ``"n_nonfinite"``;
    they stay in ``"values"`` so the record shows them.
    """
    values = [float(v) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    e = stats.estimate(finite)
    return {"n": e.n, "mean": e.mean, "std": e.std, "sem": e.sem, "ci95": list(e.ci95), "values": values,
            "n_nonfinite": len(values) - len(finite)}


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """The per-seed differences ``b[i] - a[i]`` (the same seed i in both settings) and their ``estimate``.

    A seed where either value is non-finite is dropped from the pair (and counted in ``"n_nonfinite"``).
    Raises: ValueError when ``a`` and ``b`` hold different numbers of seeds.
    """
    if len(a) != len(b):
        raise ValueError(f"paired: a and b must hold one value per seed, the same seeds; got {len(a)} and "
                         f"{len(b)} values.")
    both = [(float(x), float(y)) for x, y in zip(a, b)]
    out = estimate([y - x for x, y in both if math.isfinite(x) and math.isfinite(y)])
    out["n_nonfinite"] = len(both) - out["n"]
    return out


def verdict(difference: dict, *, direction: str, min_effect: float = 0.0) -> str:
    """The verdict rule of the module docstring, applied to a ``paired`` difference (b - a).

    Args:
      difference: ``paired(a, b)``.
      direction: "higher" when the claim is b > a, "lower" when it is b < a, "same" when it is b = a.
      min_effect: the smallest |b - a| the notes' claim describes, in the metric's units (0: any size);
        for "same", the largest |b - a| the claim tolerates (must be > 0).
    Returns: one of ``VERDICTS``.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"verdict: direction must be one of {sorted(_DIRECTIONS)}, got {direction!r}.")
    if direction == "same" and not min_effect > 0:
        raise ValueError(f"verdict: direction 'same' needs min_effect > 0 (the margin), got {min_effect!r}.")
    if difference["n"] < 2:
        return "not tested"
    if direction == "same":
        lo, hi = difference["ci95"]
        if -min_effect <= lo and hi <= min_effect:
            return "reproduced"
        if (lo > 0 or hi < 0) and abs(difference["mean"]) >= min_effect:
            return "not reproduced"
        return "partly"
    sign = _DIRECTIONS[direction]
    mean = sign * difference["mean"]
    lo, hi = sorted(sign * c for c in difference["ci95"])
    if mean <= 0:
        return "not reproduced"
    if lo > 0 and mean >= min_effect:
        return "reproduced"
    return "partly"


def describe(values, *, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    """``"mean +- sem<unit>"`` of per-seed ``values`` (or of an ``estimate``/``paired`` dict), times ``scale``."""
    e = values if isinstance(values, dict) else estimate(values)
    if e["n"] < 2:
        return f"{scale * e['mean']:.{digits}f}{unit} (1 seed)"
    return f"{scale * e['mean']:.{digits}f} +- {scale * e['sem']:.{digits}f}{unit}"


def band(ax, x, per_seed, *, label: str | None = None, color=None, scale: float = 1.0, **line):
    """Plot the mean over seeds of ``per_seed`` (shape ``[seeds, len(x)]``) against ``x`` with a shaded
    +- one-standard-error band. Non-finite entries are left out per point. Returns the mean line."""
    values = scale * np.asarray(per_seed, dtype=np.float64)
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    safe = np.where(finite, values, 0.0)
    mean = np.where(count > 0, safe.sum(axis=0) / np.maximum(count, 1), np.nan)
    spread = np.where(finite, (values - mean) ** 2, 0.0).sum(axis=0)
    sem = np.where(count > 1, np.sqrt(spread / np.maximum(count - 1, 1)) / np.sqrt(np.maximum(count, 1)), 0.0)
    (handle,) = ax.plot(x, mean, label=label, color=color, **line)
    ax.fill_between(x, mean - sem, mean + sem, color=handle.get_color(), alpha=0.2, linewidth=0)
    return handle
