"""Run records: `History` (per-epoch metrics), `EarlyStopping`, the best-metric tracker, plots and log files.

The log files of a run (`history.json`, `curves.png`) are written with one atomic writer,
`write_atomic`: a reader sees the old file or the new one, never half of one, and an interrupted write
leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxnets.checks import check_choice, check_int, check_positive_int, check_real, is_int, is_real
from jaxnets.train.stats import estimate

__all__ = ["History", "Summary", "GridPointSummary", "PairedDifference", "format_summary", "EarlyStopping",
           "NonFiniteLossError", "BestMetric", "MONITORS", "plot_history", "write_atomic", "write_text_atomic", "write_logs", "json_float", "learning_rate_of",
           "remove_stale_temporaries"]

MONITORS = ("val_loss", "val_error", "train_loss", "train_error")


# ----------------------------------------------------------------------------------------------
# History, EarlyStopping, NonFiniteLossError, BestMetric
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class History:
    """Per-epoch record of a run, or of a population of runs; entry `i` of every list belongs to epoch `i + 1`.

    Fields (each list has one entry per completed epoch, or is empty when not measured):
      train_loss: mean training loss over the epoch's batches, as they ran (the parameters change
        during the epoch; PyTorch's usual running average).
      train_error: 1 - accuracy over the same batches.
      val_loss, val_error: on the validation data at the end of the epoch, in evaluation mode
        (running BatchNorm statistics, no dropout); empty without validation data.
      learning_rate: the rate of the epoch's last update (`fit`'s `learning_rate=` schedule at that
        step, or the `learning_rate` hyperparameter of an `optax.inject_hyperparams` optimizer); empty
        when neither is available.
      images_per_sec: training examples per second over the epoch (the first epoch includes compilation).
      wall_time: seconds of training and validation since the run started, cumulative (monotone; a
        resumed run continues from the checkpoint's value).
      best_epoch: 1-based epoch with the best monitored metric (see `fit`), or None.
      stopped_early: True if early stopping ended the run.
      runs: None for a single run. For a population (`fit(seeds=..., hparams=...)`) the R members as
        dicts `{"seed": s, **hyperparameters}`, grid points outer and seeds inner (member
        `r = g * len(seeds) + i`).
      diverged: None for a single run; for a population R entries, each None or `{"step": int, "epoch":
        int}` (0-based global step of the member's first non-finite loss, its 1-based epoch).

    A population: each epoch's entry of `train_loss`, `train_error`, `val_loss`, `val_error` and
    `learning_rate` is a list of R floats (`history.val_error[epoch][r]`); a member that stopped early
    or diverged has nan from the epoch after it stopped (from the epoch in which it diverged).
    `images_per_sec` (summed over the members) and `wall_time` stay one float per epoch; `best_epoch`
    is a list of R ints-or-None and `stopped_early` a list of R bools. `member(r)` gives member r as a
    single-run History; `summary(...)` and `paired(...)` report the spread over seeds.

    JSON: `to_json()` / `History.from_json(text)`; a non-finite value is written as `null` (strict JSON)
    and read back as `nan`. A single run's JSON has no `runs`/`diverged` keys.
    """

    train_loss: list = dataclasses.field(default_factory=list)
    train_error: list = dataclasses.field(default_factory=list)
    val_loss: list = dataclasses.field(default_factory=list)
    val_error: list = dataclasses.field(default_factory=list)
    learning_rate: list = dataclasses.field(default_factory=list)
    images_per_sec: list[float] = dataclasses.field(default_factory=list)
    wall_time: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int | None | list[int | None] = None
    stopped_early: bool | list[bool] = False
    runs: list[dict] | None = None
    diverged: list[dict | None] | None = None

    _LISTS = ("train_loss", "train_error", "val_loss", "val_error", "learning_rate", "images_per_sec",
              "wall_time")
    MEMBER_LISTS = ("train_loss", "train_error", "val_loss", "val_error", "learning_rate")  # per member

    def __len__(self) -> int:
        """Number of completed epochs."""
        return len(self.train_loss)

    @property
    def is_population(self) -> bool:
        """True for the History of a population (`runs` is not None)."""
        return self.runs is not None

    # ---- JSON ----
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite floats as None)."""
        if self.runs is None:
            out: dict[str, Any] = {name: [json_float(v) for v in getattr(self, name)] for name in self._LISTS}
            out["best_epoch"], out["stopped_early"] = self.best_epoch, self.stopped_early
            return out
        size = self.population_size("History.to_dict")
        out = {name: [[json_float(v) for v in row] for row in getattr(self, name)] for name in self.MEMBER_LISTS}
        out.update({name: [json_float(v) for v in getattr(self, name)] for name in ("images_per_sec", "wall_time")})
        out["best_epoch"] = [None if b is None else int(b) for b in self.best_epoch]
        out["stopped_early"] = [bool(s) for s in self.stopped_early]
        out["runs"] = [{k: int(v) if k == "seed" else _json_value(v) for k, v in run.items()} for run in self.runs]
        out["diverged"] = [_diverged_entry(d) for d in (self.diverged or [None] * size)]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of `to_dict` (None read as nan); also reads a single run's dict with null `runs` and
        `diverged`. Raises ValueError for unknown or missing fields, or a population whose entries do not
        hold one value per member."""
        fn = "History.from_dict"
        fields = set(cls._LISTS) | {"best_epoch", "stopped_early"}
        if not isinstance(data, Mapping) or not fields <= set(data) <= fields | {"runs", "diverged"}:
            got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"{fn}: expected the fields {sorted(fields)}, got {got} (a population adds 'runs' "
                             f"and 'diverged').")
        best = data["best_epoch"]
        if data.get("runs") is None:
            lists = {name: [_from_json_float(v) for v in data[name]] for name in cls._LISTS}
            return cls(**lists, best_epoch=None if best is None else int(best),
                       stopped_early=bool(data["stopped_early"]))
        lists = {name: [[_from_json_float(v) for v in row] for row in data[name]] for name in cls.MEMBER_LISTS}
        lists.update({name: [_from_json_float(v) for v in data[name]] for name in ("images_per_sec", "wall_time")})
        runs = [{k: int(v) if k == "seed" else v for k, v in run.items()} for run in data["runs"]]
        diverged = data.get("diverged")
        history = cls(**lists, best_epoch=[None if b is None else int(b) for b in best],
                      stopped_early=[bool(s) for s in data["stopped_early"]], runs=runs,
                      diverged=None if diverged is None else [_diverged_entry(d) for d in diverged])
        history.population_size(fn)
        return history

    def to_json(self) -> str:
        """The history as strict JSON text (`json.loads` gives `to_dict()`)."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> History:
        """Read `to_json()` text (e.g. the contents of a run's history.json)."""
        return cls.from_dict(json.loads(text))

    # ---- a population ----
    def population_size(self, fn: str = "History.population_size") -> int:
        """The number of members R of a population History, after checking that every per-member entry holds
        R values.

        Raises: ValueError for a single-run History (naming `fn`, the caller) or an inconsistent one."""
        if self.runs is None:
            raise ValueError(f"{fn}: this History is a single run (runs is None); {fn.split('.')[-1]}() needs the "
                             f"History of a population, from fit(..., seeds=[...]) or fit(..., hparams={{...}}).")
        size = len(self.runs)
        for name in self.MEMBER_LISTS:
            bad = next((e for e, row in enumerate(getattr(self, name)) if len(row) != size), None)
            if bad is not None:
                raise ValueError(f"{fn}: {name}[{bad}] holds {len(getattr(self, name)[bad])} values, expected one "
                                 f"per member ({size}, the length of runs).")
        for name in ("best_epoch", "stopped_early", "diverged"):
            value = getattr(self, name)
            if (value is not None or name != "diverged") and (not isinstance(value, list) or len(value) != size):
                raise ValueError(f"{fn}: {name} must be a list of {size} entries (one per member) for a "
                                 f"population, got {value!r}.")
        return size

    @property
    def grid(self) -> list[dict]:
        """The grid points of a population, in order: each member's hyperparameters without its seed
        (`[{}]` when only seeds vary). Raises ValueError for a single run."""
        return [point for point, _ in self._grid("History.grid")]

    def _grid(self, fn: str) -> list[tuple[dict, list[int]]]:
        """`[(hyperparameters, member indices)]` per grid point, in the order of first appearance."""
        self.population_size(fn)
        points: list[tuple[dict, list[int]]] = []
        for r, run in enumerate(self.runs):
            hp = {k: v for k, v in run.items() if k != "seed"}
            for point, members in points:
                if point == hp:
                    members.append(r)
                    break
            else:
                points.append((hp, [r]))
        return points

    def _epochs_run(self, r: int) -> int:
        """Epochs member r completed: up to its divergence (excluded) or the last epoch it trained."""
        n = 0
        while n < len(self.train_loss) and math.isfinite(self.train_loss[n][r]):
            n += 1
        diverged = (self.diverged or [None] * len(self.runs))[r]
        return n if diverged is None else min(n, int(diverged["epoch"]) - 1)

    def member(self, r: int) -> History:
        """Member `r` of a population as an ordinary single-run History: its own metric values, best epoch
        and early stop, over the epochs it completed (a member that stopped early ends at its last epoch;
        one that diverged ends before the epoch it diverged in, as `NonFiniteLossError.history` does).
        `images_per_sec` and `wall_time` are the population's (throughput summed over members; one clock).

        Args:
          r: 0-based member index, `0 <= r < len(history.runs)`.
        Returns: a History with `runs = None`.
        Raises: TypeError for a non-int `r`; ValueError for `r` out of range or a single-run History.
        """
        fn = "History.member"
        size = self.population_size(fn)
        r = check_int(fn, "r", r, minimum=0, maximum=size - 1)
        n = self._epochs_run(r)
        lists = {name: [float(row[r]) for row in getattr(self, name)[:n]] for name in self.MEMBER_LISTS}
        return History(**lists, images_per_sec=list(self.images_per_sec[:n]), wall_time=list(self.wall_time[:n]),
                       best_epoch=self.best_epoch[r], stopped_early=bool(self.stopped_early[r]))

    def _member_values(self, fn: str, metric: str, at: str) -> list[float]:
        """Per member, `metric` at its last completed epoch ("final") or at its best epoch ("best"); nan
        for a member that diverged or has no such epoch."""
        check_choice(fn, "metric", metric, MONITORS)
        check_choice(fn, "at", at, ("final", "best"))
        size = self.population_size(fn)
        rows = getattr(self, metric)
        if not rows:
            raise ValueError(f"{fn}: the history holds no {metric!r} values (fit without val_data records no "
                             f"validation metrics); use metric='train_loss' or 'train_error'.")
        diverged = self.diverged or [None] * size
        values = []
        for r in range(size):
            epoch = self._epochs_run(r) if at == "final" else self.best_epoch[r]
            ok = diverged[r] is None and epoch is not None and 1 <= epoch <= len(rows)
            values.append(float(rows[epoch - 1][r]) if ok else math.nan)
        return values

    def summary(self, metric: str = "val_error", at: str = "final") -> Summary:
        """Per grid point, the mean of `metric` over its seeds with its spread (`stats.estimate`).

        A member's value is `metric` at its last completed epoch (`at="final"`; for a member that stopped
        early, the epoch it stopped at) or at its `best_epoch` (`at="best"`: the epoch of the monitored
        metric's best, which `fit` returns under early stopping). Diverged members, and nan values, are
        left out and counted (`n_diverged`; `n` counts the values used).

        Args:
          metric: "val_error" (default), "val_loss", "train_error" or "train_loss".
          at: "final" (default) or "best".
        Returns: a `Summary`, a tuple of one `GridPointSummary` per grid point (mean, std with ddof = 1,
          sem, 95% Student-t interval, n, n_diverged, the per-seed values and the hyperparameters);
          `print(summary)` prints the table "mean +- sem" per grid point. With one seed, std, sem and the
          interval are nan.
        Raises: ValueError for an unknown metric or `at`, a metric the history did not record, or a
          single-run History; TypeError for non-string arguments.
        """
        fn = "History.summary"
        values = self._member_values(fn, metric, at)
        diverged = self.diverged or [None] * len(self.runs)
        points = []
        for g, (hp, members) in enumerate(self._grid(fn)):
            own = [values[r] for r in members]
            e = estimate([v for v in own if math.isfinite(v)])
            points.append(GridPointSummary(
                index=g, hparams=hp, metric=metric, at=at, seeds=tuple(self.runs[r]["seed"] for r in members),
                values=tuple(own), n=e.n, n_diverged=sum(diverged[r] is not None for r in members),
                mean=e.mean, std=e.std, sem=e.sem, ci95=e.ci95))
        return Summary(points, metric=metric, at=at)

    def _grid_point(self, fn: str, name: str, point, grid: list[tuple[dict, list[int]]]) -> int:
        """The index of the grid point `point`: an int index, or a dict of hyperparameter values that
        matches exactly one grid point."""
        if isinstance(point, Mapping):
            names = set(grid[0][0])
            unknown = sorted(set(point) - names)
            if unknown:
                raise ValueError(f"{fn}: {name} names {unknown}, which are not hyperparameters of this population "
                                 f"(its hyperparameters: {sorted(names)}).")
            found = [g for g, (hp, _) in enumerate(grid) if all(hp[k] == v for k, v in point.items())]
            if len(found) != 1:
                what = "no grid point" if not found else f"{len(found)} grid points ({found})"
                raise ValueError(f"{fn}: {name}={dict(point)} matches {what}; the grid points are "
                                 f"{[hp for hp, _ in grid]} (give every hyperparameter, or the grid index).")
            return found[0]
        if is_int(point):
            return check_int(fn, name, point, minimum=0, maximum=len(grid) - 1)
        raise TypeError(f"{fn}: {name} must be a grid index (int) or a dict of hyperparameter values, got "
                        f"{type(point).__name__} {point!r}.")

    def paired(self, a, b, metric: str = "val_error", at: str = "final") -> PairedDifference:
        """The per-seed differences `b - a` of `metric` between two grid points, and their mean and spread.

        The same seed gives both members the same initialisation and data order, so the paired difference
        removes that shared noise: its standard error is usually far below that of either mean. Only the
        seeds that both grid points have a finite value for are used (see `summary` for "final"/"best").

        Args:
          a, b: grid points: a grid index (int, `history.grid[i]`) or a dict of hyperparameter values that
            matches exactly one grid point (e.g. `{"learning_rate": 0.1}` in a grid over the learning rate).
          metric, at: as in `summary`.
        Returns: a `PairedDifference` (seeds, differences, n, mean, std, sem, 95% Student-t interval);
          `print()` gives one line.
        Raises: ValueError for an unknown metric or `at`, a grid point that does not exist (or a dict that
          matches several), a seed repeated within a grid point, or a single-run History; TypeError for a
          grid point that is neither an int nor a dict.
        """
        fn = "History.paired"
        values = self._member_values(fn, metric, at)
        grid = self._grid(fn)
        ga, gb = self._grid_point(fn, "a", a, grid), self._grid_point(fn, "b", b, grid)
        by_seed = []
        for g in (ga, gb):
            seeds = {self.runs[r]["seed"]: values[r] for r in grid[g][1]}
            if len(seeds) != len(grid[g][1]):
                raise ValueError(f"{fn}: grid point {g} repeats a seed ({[self.runs[r]['seed'] for r in grid[g][1]]}); "
                                 f"pairs are formed by seed.")
            by_seed.append(seeds)
        seeds = tuple(s for s in by_seed[0] if s in by_seed[1]
                      and math.isfinite(by_seed[0][s]) and math.isfinite(by_seed[1][s]))
        differences = tuple(by_seed[1][s] - by_seed[0][s] for s in seeds)
        e = estimate(differences)
        return PairedDifference(a=grid[ga][0], b=grid[gb][0], metric=metric, at=at, seeds=seeds,
                                differences=differences, n=e.n, mean=e.mean, std=e.std, sem=e.sem, ci95=e.ci95)

    @classmethod
    def from_members(cls, members: Sequence[History], runs: Sequence[Mapping], *,
                     diverged: Sequence[Mapping | None] | None = None) -> History:
        """A population History from single-run Histories, e.g. of a Python loop over seeds and settings
        (a run that raised `NonFiniteLossError` gives its `error.history` and a `diverged` entry).

        Shorter members are padded with nan. `images_per_sec[e]` is the throughput of running the members
        of epoch e one after another, `R_e / sum(1 / images_per_sec_r)`, and `wall_time[e]` the summed
        seconds of every member up to its epoch e (or its last epoch); both are empty when a member lacks
        them.

        Args:
          members: R single-run Histories.
          runs: R dicts `{"seed": int, **hyperparameters}`, the same keys in each.
          diverged: None, or R entries each None or `{"step": int, "epoch": int}`.
        Returns: a population History.
        Raises: ValueError for lengths that differ from R, a population among `members`, runs without an
          int "seed" or with differing keys, or members that disagree on which metrics they recorded.
        """
        fn = "History.from_members"
        members, runs = list(members), [dict(run) for run in runs]
        if not members or len(runs) != len(members) or (diverged is not None and len(diverged) != len(members)):
            raise ValueError(f"{fn}: expected R >= 1 members with R runs (and R diverged entries), got "
                             f"{len(members)} members, {len(runs)} runs"
                             f"{'' if diverged is None else f', {len(diverged)} diverged entries'}.")
        if any(not isinstance(m, History) or m.runs is not None for m in members):
            raise ValueError(f"{fn}: every member must be a single-run History, got "
                             f"{[type(m).__name__ if not isinstance(m, History) else 'population' for m in members]}.")
        if any(not is_int(run.get("seed")) or set(run) != set(runs[0]) for run in runs):
            raise ValueError(f"{fn}: every run must be a dict with an int 'seed' and the same keys, got {runs}.")
        epochs = max(len(m) for m in members)
        lists: dict[str, list] = {}
        for name in cls.MEMBER_LISTS:
            recorded = [len(getattr(m, name)) > 0 for m in members if len(m)]
            if any(recorded) and not all(recorded):
                raise ValueError(f"{fn}: some members recorded {name} and others did not.")
            lists[name] = [] if not any(recorded) else [
                [getattr(m, name)[e] if e < len(getattr(m, name)) else math.nan for m in members]
                for e in range(epochs)]
        images, wall = [], []  # left empty when a member did not record its times (a History built by hand)
        if all(len(m.images_per_sec) == len(m) == len(m.wall_time) for m in members):
            ran = [[m for m in members if e < len(m)] for e in range(epochs)]
            images = [len(ms) / math.fsum(1.0 / m.images_per_sec[e] for m in ms) for e, ms in enumerate(ran)]
            wall = [math.fsum(m.wall_time[min(e, len(m) - 1)] for m in members if len(m)) for e in range(epochs)]
        return cls(**lists, images_per_sec=images, wall_time=wall, best_epoch=[m.best_epoch for m in members],
                   stopped_early=[bool(m.stopped_early) for m in members],
                   runs=[{k: int(v) if k == "seed" else v for k, v in run.items()} for run in runs],
                   diverged=None if diverged is None else [_diverged_entry(d) for d in diverged])


def _diverged_entry(entry: Mapping | None) -> dict | None:
    """A `History.diverged` entry: None, or `{"step": int, "epoch": int}`."""
    return None if entry is None else {"step": int(entry["step"]), "epoch": int(entry["epoch"])}


def _from_json_float(value) -> float:
    return math.nan if value is None else float(value)


def _json_value(value):
    """A hyperparameter value for JSON: a real number as a float (non-finite as None), else as it is."""
    return json_float(value) if is_real(value) else value


def _format_number(value: float, percent: bool) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _format_hparams(hp: Mapping) -> str:
    return ", ".join(f"{k}={v:g}" if is_real(v) else f"{k}={v}" for k, v in hp.items())


@dataclasses.dataclass(frozen=True)
class GridPointSummary:
    """One grid point of `History.summary`: `metric` over its seeds.

    Attributes:
      index: the grid point's index (`History.grid[index]`); `hparams`: its hyperparameters.
      metric, at: what was summarised ("val_error", ...; "final" or "best").
      seeds: its members' seeds; `values`: their values, in the same order (nan for a member left out).
      n: values used (finite, not diverged); `n_diverged`: members that diverged.
      mean, std (ddof = 1), sem (std / sqrt(n)), ci95 `(lo, hi)` (Student t, n - 1 degrees of freedom):
        see `jaxnets.train.stats.estimate`; nan where n is too small (std, sem, ci95 need n >= 2).
    """

    index: int
    hparams: dict
    metric: str
    at: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    n: int
    n_diverged: int
    mean: float
    std: float
    sem: float
    ci95: tuple[float, float]

    def __str__(self) -> str:
        return format_summary([self])


class Summary(tuple):
    """`History.summary`'s result: a tuple of `GridPointSummary`, one per grid point, with the `metric` and
    `at` it summarises; `str()` is the table of `format_summary`."""

    metric: str
    at: str

    def __new__(cls, points, *, metric: str, at: str):
        self = super().__new__(cls, points)
        self.metric, self.at = metric, at
        return self

    def __str__(self) -> str:
        return format_summary(self)


def format_summary(points: Sequence[GridPointSummary]) -> str:
    """The table of `History.summary`: per grid point its hyperparameters, `n` (the seeds used), the
    mean +- standard error, the 95% interval and the number of diverged members. Errors are in percent;
    with one seed only the mean is shown.

        val_error (%) at the final epoch over seeds: mean +- standard error, 95% CI (Student t)
        learning_rate  n  val_error (%)  95% CI        diverged
        0.01           3  2.13 +- 0.12   [1.61, 2.65]         0
        0.1            3  1.87 +- 0.05   [1.65, 2.09]         0

    Args:
      points: `GridPointSummary` records of one `History.summary` call (its `Summary`).
    Returns: the table as text, one line per grid point after two header lines.
    """
    if not points:
        return "(no grid points)"
    metric, at = points[0].metric, points[0].at
    percent = metric.endswith("_error")
    name = f"{metric} (%)" if percent else metric
    names = list(points[0].hparams)
    header = [*names, "n", name, "95% CI", "diverged"]
    rows = []
    for p in points:
        mean = _format_number(p.mean, percent)
        value = mean if p.n < 2 else f"{mean} +- {_format_number(p.sem, percent)}"
        ci = "-" if p.n < 2 else f"[{_format_number(p.ci95[0], percent)}, {_format_number(p.ci95[1], percent)}]"
        rows.append([*(f"{p.hparams[k]:g}" if is_real(p.hparams[k]) else str(p.hparams[k]) for k in names),
                     str(p.n), value, ci, str(p.n_diverged)])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {len(names), len(header) - 1}  # the counts are right-aligned, the rest left-aligned
    lines = [f"{name} at the {'final' if at == 'final' else 'best'} epoch over seeds: mean +- standard error, "
             f"95% CI (Student t)"]
    for row in [header, *rows]:
        lines.append("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """`History.paired`'s result: per seed, `metric` of grid point `b` minus that of grid point `a`.

    Attributes:
      a, b: the two grid points' hyperparameters; `metric`, `at`: as in `History.summary`.
      seeds: the seeds both have a finite value for; `differences`: `b - a` per seed, in that order.
      n, mean, std, sem, ci95: of the differences (`jaxnets.train.stats.estimate`); the difference is
        clear at the 95% level when the interval excludes 0.
    """

    a: dict
    b: dict
    metric: str
    at: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    n: int
    mean: float
    std: float
    sem: float
    ci95: tuple[float, float]

    def __str__(self) -> str:
        percent = self.metric.endswith("_error")
        unit = " (%)" if percent else ""
        ci = ("-" if self.n < 2 else
              f"[{_format_number(self.ci95[0], percent)}, {_format_number(self.ci95[1], percent)}]")
        return (f"{self.metric}{unit} at the {self.at} epoch, ({_format_hparams(self.b) or 'b'}) - "
                f"({_format_hparams(self.a) or 'a'}) over {self.n} paired seeds: "
                f"{_format_number(self.mean, percent)} +- {_format_number(self.sem, percent)}, 95% CI {ci}")


def json_float(value) -> float | None:
    """`value` as a float, or None when it is not finite (strict JSON has no nan or inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop when `monitor` has not improved for `patience` epochs; `fit` then returns the best epoch's state.

    An epoch improves when `value < best - min_delta` (every monitored quantity is lower-is-better; a
    non-finite value never improves). Training stops after `patience` consecutive epochs without
    improvement. PyTorch: no built-in (Keras' `EarlyStopping(restore_best_weights=True)`).

    Attributes:
      monitor: "val_loss" (default), "val_error", "train_loss" or "train_error".
      patience: epochs without improvement before stopping, an int >= 1.
      min_delta: minimum decrease that counts as an improvement, >= 0.
    Raises: ValueError/TypeError for an unknown monitor, `patience < 1`, a negative `min_delta`.
    """

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0

    def __post_init__(self):
        fn = "EarlyStopping"
        check_choice(fn, "monitor", self.monitor, MONITORS)
        check_positive_int(fn, "patience", self.patience)
        check_real(fn, "min_delta", self.min_delta, minimum=0.0)


class NonFiniteLossError(RuntimeError):
    """Training stopped because a step's loss (or the parameters after an epoch) was not finite.

    Attributes:
      step: the `TrainState.step` value of the offending step (0-based: the number of updates before it).
      epoch: its 1-based epoch; `batch`: its 1-based batch within the epoch.
      checkpoint: directory of the last good checkpoint (untouched by the failure), or None.
      history: the run's `History` up to the failing epoch (completed epochs only), or None; a loop over
        settings can record it (`History.from_members(..., diverged=...)`).
    """

    def __init__(self, message: str, *, step: int, epoch: int, batch: int, checkpoint: str | None,
                 history: History | None = None):
        super().__init__(message)
        self.step, self.epoch, self.batch, self.checkpoint = step, epoch, batch, checkpoint
        self.history = history


class BestMetric:
    """Tracks the monitored metric: the best value, its epoch, a rank raised on every improvement, and
    the epochs since the last improvement (early stopping's counter).

    `update(value, epoch) -> improved`: an epoch improves when `value` is finite and
    `value < best - min_delta` (the first finite value always does). `to_dict()`/`load(dict)` save and
    restore the tracker with a checkpoint.
    """

    def __init__(self, min_delta: float):
        self.min_delta = min_delta
        self.value: float | None = None
        self.epoch: int | None = None
        self.rank = 0
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        improved = math.isfinite(value) and (self.value is None or value < self.value - self.min_delta)
        if improved:
            self.value, self.epoch, self.rank, self.bad_epochs = value, epoch, self.rank + 1, 0
        else:
            self.bad_epochs += 1
        return improved

    def to_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "rank": self.rank, "bad_epochs": self.bad_epochs}

    def load(self, data: Mapping) -> None:
        self.value, self.epoch = data["value"], data["epoch"]
        self.rank, self.bad_epochs = int(data["rank"]), int(data["bad_epochs"])


def learning_rate_of(learning_rate, opt_state, step: int) -> float | None:
    """The learning rate of update `step` (0-based), for `History.learning_rate`, or None when it cannot be known.

    Args:
      learning_rate: a float or an optax schedule (`fit`'s `learning_rate=`), or None: then the
        `learning_rate` hyperparameter of an `optax.inject_hyperparams` state in `opt_state`, if exactly one.
      opt_state: the optimizer state after the update.
      step: the 0-based update.
    """
    if learning_rate is not None:
        return float(learning_rate(step)) if callable(learning_rate) else float(learning_rate)
    found = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]
             if len(path) >= 2 and getattr(path[-2], "name", None) == "hyperparams"
             and getattr(path[-1], "key", None) == "learning_rate"]
    return float(np.asarray(jax.device_get(found[0])).reshape(-1)[0]) if len(found) == 1 else None


# ----------------------------------------------------------------------------------------------
# the atomic writer
# ----------------------------------------------------------------------------------------------
_TMP = ".tmp-"  # temporary files are named `<target>.tmp-<pid><ext>`


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot be checked): leave its file alone
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Remove the temporary files `<path>.tmp-<pid>*` that a killed process left for the target `path`.

    A file counts as stale when the process `<pid>` no longer runs, or is this process (whose own
    earlier write is over). Returns the removed paths.
    """
    path = os.fspath(path)
    removed = []
    for tmp in glob.glob(glob.escape(path) + _TMP + "*"):
        digits = tmp[len(path) + len(_TMP):]
        pid = digits[:len(digits) - len(digits.lstrip("0123456789"))]
        if not pid or (int(pid) != os.getpid() and _pid_alive(int(pid))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def write_atomic(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Write the file `path` atomically: `write(tmp)` fills a temporary file next to it, then it is renamed.

    A reader sees the old file or the new one, never half of one. The temporary file is
    `<path>.tmp-<pid><ext>` (the extension of `path` kept, for writers that pick the format from it);
    it is removed when `write` raises (or the rename fails), and stale ones of the same target left by a
    killed process are removed first (`remove_stale_temporaries`).

    Args:
      path: the target file; its directory must exist.
      write: `write(tmp_path)`, writes the whole contents to `tmp_path`.
    Raises: whatever `write` or the rename raises, after removing the temporary file.
    """
    path = os.fspath(path)
    remove_stale_temporaries(path)
    tmp = f"{path}{_TMP}{os.getpid()}{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically (`write_atomic`)."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


# ----------------------------------------------------------------------------------------------
# plots and log files
# ----------------------------------------------------------------------------------------------
def plot_history(history: History, path: str | os.PathLike) -> None:
    """Save `curves.png`-style plots of a `History`: loss and error (%) per epoch, train and validation.

    A population (`history.runs` set): per grid point, the mean over its seeds (solid: validation, dashed:
    training) and a band from the lowest to the highest seed's value at each epoch (min-max over the
    seeds, not a confidence interval: it shows every member), around the validation curve (the training
    curve without validation data); the legend names the grid point and its number of seeds. A member's
    nan epochs (stopped early or diverged) are left out of the mean and the band.

    Uses matplotlib's object API (`matplotlib.figure.Figure`, Agg canvas), so it never opens a window or
    touches pyplot's global state. The file is written atomically (`write_atomic`).
    """
    from matplotlib.figure import Figure

    epochs = np.arange(1, len(history) + 1)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_err = fig.subplots(1, 2)
    for ax, name, scale, label in ((ax_loss, "loss", 1.0, "loss"), (ax_err, "error", 100.0, "error (%)")):
        if history.runs is not None:
            _plot_population(ax, history, name, scale, epochs)
        else:
            ax.plot(epochs, scale * np.asarray(getattr(history, f"train_{name}"), float), "o-", label="train")
            if len(getattr(history, f"val_{name}")):
                ax.plot(epochs, scale * np.asarray(getattr(history, f"val_{name}"), float), "s-", label="validation")
            if history.best_epoch is not None:
                ax.axvline(history.best_epoch, color="gray", linestyle=":", label=f"best (epoch {history.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    suffix = "" if history.runs is None else " (mean over seeds; band: min-max)"
    ax_loss.set_title(f"loss{suffix}")
    ax_err.set_title(f"error{suffix}")
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))


def _plot_population(ax, history: History, name: str, scale: float, epochs: np.ndarray) -> None:
    """Per grid point: the mean over seeds of train (dashed) and validation (solid) `name`, and the min-max
    band of the validation curve (of the training curve without validation data)."""
    has_val = len(getattr(history, f"val_{name}")) > 0
    for g, (hp, members) in enumerate(history._grid("plot_history")):
        color = f"C{g % 10}"
        label = f"{_format_hparams(hp) or 'population'} ({len(members)} seeds)"
        for split in ("train", "val"):
            rows = getattr(history, f"{split}_{name}")
            if not len(rows):
                continue
            values = scale * np.asarray(rows, float)[:, members]  # [epochs, seeds]
            finite = np.isfinite(values)
            count = finite.sum(axis=1)
            mean = np.where(finite, values, 0.0).sum(axis=1) / np.maximum(count, 1)
            mean[count == 0] = np.nan  # every seed stopped or diverged: no point
            main = split == "val" or not has_val
            ax.plot(epochs, mean, "-" if split == "val" else "--", color=color,
                    label=label + ("" if has_val else ", train") if main else None)
            if main:
                low = np.where(finite, values, np.inf).min(axis=1)
                high = np.where(finite, values, -np.inf).max(axis=1)
                low[count == 0], high[count == 0] = np.nan, np.nan
                ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
    if has_val:
        ax.plot([], [], "--", color="gray", label="train (dashed)")


def write_logs(log_dir: str | None, history: History) -> None:
    """Write `history.json` and `curves.png` into `log_dir` (created if needed); nothing when `log_dir` is None
    or the history is empty."""
    if log_dir is None or not len(history):
        return
    os.makedirs(log_dir, exist_ok=True)
    write_text_atomic(os.path.join(log_dir, "history.json"), history.to_json() + "\n")
    plot_history(history, os.path.join(log_dir, "curves.png"))
