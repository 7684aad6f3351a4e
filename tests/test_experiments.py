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
