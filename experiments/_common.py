"""What every experiment script shares: the command line, the results folder and the end of a figure.

A script defines ``CONFIG`` (the default run: under 10 minutes on a 2-core CPU), ``FULL_CONFIG`` (the
GPU/TPU-sized run) and ``TINY_CONFIG`` (seconds; the smoke test runs it), each with a ``"preset"`` entry,
and ``main(config=CONFIG, *, out=None)``, which measures, calls :func:`write_results` and returns the
folder it wrote. Its last lines are::

    if __name__ == "__main__":
        run(main, CONFIG, FULL_CONFIG, TINY_CONFIG)

so ``python -m experiments.<name> [--full | --tiny] [--out DIR]`` works for every script.

Where results go: ``<root>/<name>/`` for the default preset and ``<root>/<name>_<preset>/`` otherwise
(``<name>_full``, ``<name>_tiny``), with ``<root>`` = ``--out`` or ``experiments/results``; a tiny run
without ``--out`` goes to the system's temporary folder, never over the committed results.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display: the same output on a laptop, a CI runner or a TPU host
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("jaxnets", "jax", "jaxlib", "flax", "optax", "numpy")


def versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def cpu_model() -> dict:
    """The CPU as /proc/cpuinfo names it (model name, family, model, stepping, AVX-512 or not) and the CPUs
    this process may use. XLA's CPU kernels depend on the instruction set and the thread count, so the same
    seed on another CPU generation gives numbers that differ in the last bits from the first steps."""
    info = {"usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return info
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info.update({key: fields.get(name) for key, name in (("model_name", "model name"), ("family", "cpu family"),
                                                          ("model", "model"), ("stepping", "stepping"))})
    info["avx512f"] = "avx512f" in fields.get("flags", "").split()
    return info


def device() -> dict:
    """What the numbers were measured on: JAX's default device and the host (with `cpu_model()`)."""
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind, "device_count": jax.device_count(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "processor": platform.processor(),
            "cpu": cpu_model(), "python": platform.python_version()}


def to_json(value):
    """``value`` with arrays as lists and numpy/JAX scalars as Python numbers, ready for strict JSON.

    Non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (JSON has no such numbers): an
    overflow is a result to report, and a string makes it impossible to mistake for a measurement.
    """
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return to_json(np.asarray(value).tolist())
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def results_folder(script_file: str, preset: str, out: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>/`` (default preset) or ``<root>/<name>_<preset>/``; see the module docstring."""
    name = Path(script_file).stem
    if out is None:
        out = Path(tempfile.gettempdir()) / "jaxnets-experiments" if preset == "tiny" else RESULTS
    return Path(out) / (name if preset == "default" else f"{name}_{preset}")


def write_results(script_file: str, config: Mapping, results: Mapping, *, figures: Mapping | None = None,
                  out: str | os.PathLike | None = None, started: float | None = None) -> Path:
    """Write ``results.json`` and one PNG per figure into the experiment's results folder.

    Args:
      script_file: the script's ``__file__``; its stem names the experiment and the folder.
      config: the configuration that ran (must hold ``"preset"``).
      results: every measured number (arrays allowed; see :func:`to_json`).
      figures: ``{file stem: matplotlib figure}``; each is saved as ``<stem>.png`` and closed.
      out: results root (``--out``); None for the default (see :func:`results_folder`).
      started: ``time.perf_counter()`` at the start of the run, for the recorded wall time.
    Returns: the folder written. Earlier ``results.json`` and PNGs there are removed first, so the folder
      always holds one run.
    """
    folder = results_folder(script_file, config["preset"], out)
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.png"), *folder.glob("results.json")]:
        old.unlink()
    names = []
    for stem, fig in (figures or {}).items():
        fig.savefig(folder / f"{stem}.png", dpi=100)  # lay figures out in the script (tight_layout)
        plt.close(fig)
        names.append(f"{stem}.png")
    record = {
        "experiment": Path(script_file).stem,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if started is None else round(time.perf_counter() - started, 2),
        "device": device(),
        "versions": versions(),
        "config": config,
        "results": results,
        "figures": names,
    }
    (folder / "results.json").write_text(json.dumps(to_json(record), indent=1, allow_nan=False) + "\n")
    print(f"wrote {folder}/results.json and {len(names)} figure(s) in {record['wall_time_s']} s")
    return folder


def first_epoch(curve, target: float, *, strict: bool) -> int | None:
    """The first epoch (1-based) whose value in ``curve`` (one value per epoch) is at most ``target``, or below
    it with ``strict=True``; None when no epoch gets there."""
    for epoch, value in enumerate(curve, 1):
        if value < target or (not strict and value == target):
            return epoch
    return None


def machine_load() -> dict:
    """The 1/5/15-minute load averages and the CPU count: the context of every wall time recorded."""
    return {"load_average": list(os.getloadavg()), "cpu_count": os.cpu_count()}


def finish_figure(fig, axes=(), *, grid: Mapping | None = None, legend: Mapping | None = None,
                  suptitle: str | None = None):
    """The common end of a figure: a light grid on each of ``axes`` (and a legend, when ``legend`` is given),
    then the figure's ``suptitle`` and a tight layout.

    Args:
      fig: the matplotlib figure.
      axes: the axes to grid (any iterable; a 2-D array of axes: pass ``axes.flat``).
      grid: extra ``Axes.grid`` options, e.g. ``{"which": "both"}`` for log axes.
      legend: ``Axes.legend`` options for every one of ``axes`` (``{}``: the defaults); None: no legend.
      suptitle: the figure title; None: none.
    Returns: ``fig``, for ``return finish_figure(...)`` at the end of a plot function.
    """
    for ax in axes:
        ax.grid(alpha=0.3, **(grid or {}))  # light, so the data stay in front
        if legend is not None:
            ax.legend(**legend)
    if suptitle is not None:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def run(main: Callable, config: Mapping, full_config: Mapping, tiny_config: Mapping,
        argv: list[str] | None = None) -> Path:
    """Parse ``[--full | --tiny] [--out DIR]`` and call ``main(chosen_config, out=DIR)``."""
    parser = argparse.ArgumentParser(description=(main.__doc__ or "").strip().splitlines()[0] if main.__doc__
                                     else None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the GPU/TPU-sized configuration (FULL_CONFIG)")
    size.add_argument("--tiny", action="store_true", help="a seconds-long configuration (TINY_CONFIG)")
    parser.add_argument("--out", default=None, help=f"results root (default {RESULTS}; a temporary folder "
                                                    f"for --tiny)")
    args = parser.parse_args(argv)
    chosen = full_config if args.full else tiny_config if args.tiny else config
    return main(dict(chosen), out=args.out)
