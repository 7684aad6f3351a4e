"""Smoke test of every experiment script: its TINY_CONFIG runs (seconds) into a temporary folder and writes a
well-formed results.json (config, versions, device, finite numbers) and its PNG figures.

Scripts are discovered: every ``experiments/*.py`` not starting with ``_`` must define ``main(config, *,
out)`` and ``TINY_CONFIG`` (see ``experiments/_common.py``), so a new script is covered without editing this
file. Timing numbers are not asserted: a tiny run on a shared machine measures nothing.
"""
import importlib
import json
import math
from pathlib import Path

import jax
import pytest

from experiments import _common

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.name.startswith("_"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _numbers(value):
    """Every number in a JSON value, and every string that stands for a non-finite float."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value
    elif value in ("nan", "inf", "-inf"):
        yield float(value)


def test_experiments_are_discovered():
    assert {"init_signal_propagation", "autodiff_modes", "double_descent"} <= set(EXPERIMENTS)


@pytest.mark.slow  # every script's tiny run: most of the suite's time
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_tiny_run_writes_results(name, tmp_path):
    module = importlib.import_module(f"experiments.{name}")
    for preset in ("CONFIG", "FULL_CONFIG", "TINY_CONFIG"):
        assert getattr(module, preset)["preset"] == {"CONFIG": "default", "FULL_CONFIG": "full",
                                                     "TINY_CONFIG": "tiny"}[preset]
    # Scripts are user code run as `python -m experiments.<name>`, with JAX's default (standard) promotion;
    # the suite's strict promotion (tests/conftest.py) is for the library. Some call optax directly.
    with jax.numpy_dtype_promotion("standard"):
        folder = module.main(dict(module.TINY_CONFIG), out=tmp_path)
    assert folder == tmp_path / f"{name}_tiny"  # never the committed experiments/results/<name>/
    record = json.loads((folder / "results.json").read_text())
    assert record["experiment"] == name
    assert record["config"] == _common.to_json(module.TINY_CONFIG)
    assert set(record["versions"]) == set(_common.PACKAGES) and record["versions"]["jax"] != "not installed"
    assert {"platform", "device_kind", "cpu_count"} <= set(record["device"])
    assert record["date"] and record["wall_time_s"] > 0
    numbers = list(_numbers(record["results"]))
    assert numbers, "results.json holds no measured numbers"
    assert all(math.isfinite(v) for v in numbers), "a tiny run produced inf/nan"
    assert record["figures"]
    for figure in record["figures"]:
        png = (folder / figure).read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_to_json_makes_strict_json_of_arrays_and_non_finite_floats():
    import jax.numpy as jnp
    import numpy as np

    value = {"a": np.array([1.0, np.inf]), 2: (jnp.float32(0.5), float("nan"), -math.inf), "s": np.int64(3)}
    assert _common.to_json(value) == {"a": [1.0, "inf"], "2": [0.5, "nan", "-inf"], "s": 3}
    json.dumps(_common.to_json(value), allow_nan=False)


def test_run_picks_the_config_and_folder(tmp_path):
    calls = []

    def main(config, *, out=None):
        calls.append((config["preset"], out))
        return _common.results_folder("x/demo.py", config["preset"], out)

    configs = [{"preset": p} for p in ("default", "full", "tiny")]
    assert _common.run(main, *configs, argv=["--out", str(tmp_path)]) == tmp_path / "demo"
    assert _common.run(main, *configs, argv=["--full", "--out", str(tmp_path)]) == tmp_path / "demo_full"
    assert _common.run(main, *configs, argv=["--tiny"]).parent != _common.RESULTS  # a tiny run never lands there
    assert _common.run(main, *configs, argv=[]) == _common.RESULTS / "demo"
    assert [c[0] for c in calls] == ["default", "full", "tiny", "default"]
    with pytest.raises(SystemExit):
        _common.run(main, *configs, argv=["--full", "--tiny"])


@pytest.mark.parametrize("curve, target, strict, expected", [
    ([2.0, 1.0, 0.5], 1.0, False, 2),   # reaching the target counts unless strict
    ([2.0, 1.0, 0.5], 1.0, True, 3),
    ([2.0, 1.5], 1.0, False, None),     # never reached
    ([], 1.0, False, None),
    ([float("nan"), 0.5], 1.0, True, 2),  # a nan epoch never counts as reached
    ([0.1, 2.0], 1.0, True, 1),          # epochs are 1-based
])
def test_first_epoch(curve, target, strict, expected):
    assert _common.first_epoch(curve, target, strict=strict) == expected


def test_finish_figure_grids_legends_and_titles():
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3)
    for ax in axes:
        ax.plot([1, 2], [1, 10], label="a line")
    assert _common.finish_figure(fig, axes[:2], grid={"which": "both"}, legend={"fontsize": 7},
                                 suptitle="the title") is fig
    assert fig._suptitle.get_text() == "the title"
    assert [ax.get_legend() is not None for ax in axes] == [True, True, False]
    assert axes[0].get_legend().get_texts()[0].get_fontsize() == 7
    assert [ax.xaxis.get_gridlines()[0].get_visible() for ax in axes] == [True, True, False]
    assert axes[0].xaxis.get_gridlines()[0].get_alpha() == 0.3
    fig2, ax2 = plt.subplots()
    _common.finish_figure(fig2)  # no axes, no title: only the layout
    assert fig2._suptitle is None and ax2.get_legend() is None
    plt.close(fig)
    plt.close(fig2)


def test_machine_load_records_the_load_and_cores():
    load = _common.machine_load()
    assert len(load["load_average"]) == 3 and load["cpu_count"] >= 1
