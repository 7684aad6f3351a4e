"""experiments/_regrade.py: the re-grading of the older experiments from their committed results.json.

The expected numbers are computed by hand from the per-seed values in the committed results (Student-t
quantiles 4.303 for 2 degrees of freedom, 2.776 for 4), not with ``_protocol``, so a wrong pairing, sign or
interval in the script shows up here.
"""
import json
from pathlib import Path

import pytest

from experiments import _regrade

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def regraded(tmp_path_factory):
    path = _regrade.main(tmp_path_factory.mktemp("regrade") / "regrade.json")
    return path, json.loads(path.read_text())


def _claim(regraded, experiment, startswith):
    (claim,) = [c for c in regraded[1]["experiments"][experiment]["claims"] if c["claim"].startswith(startswith)]
    return claim


def test_committed_file_is_reproduced(regraded):
    assert regraded[0].read_text() == (ROOT / "experiments" / "results" / "regrade.json").read_text()


def test_weight_decay_mask_is_not_reproduced(regraded):
    # all: 7.3 6.0 7.0 7.0 7.6%; no_bias_no_norm: 8.7 7.3 7.3 7.4 8.8% (seeds 0-4).
    c = _claim(regraded, "weight_decay", "sparing biases")
    assert c["difference"]["values"] == pytest.approx([0.014, 0.013, 0.003, 0.004, 0.012], abs=1e-12)
    assert c["mean"] == pytest.approx(0.0092, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0023537, abs=1e-6)           # sqrt(1.108e-4 / 4) / sqrt(5)
    assert c["ci95"] == pytest.approx([0.0092 - 0.006535, 0.0092 + 0.006535], abs=2e-5)
    assert (c["direction"], c["min_effect"], c["verdict"]) == ("lower", 0.0, "not reproduced")


def test_ensemble_beats_its_members_in_error(regraded):
    # ensemble 3.7%; members 5.1 4.2 5.3 4.9 5.3%: differences -1.4 -0.5 -1.6 -1.2 -1.6 points.
    c = _claim(regraded, "ensembles_and_tta", "an equal-weight ensemble of 5 seeds beats a single member [error]")
    assert c["mean"] == pytest.approx(-0.0126, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0020396, abs=1e-6)           # sqrt(8.32e-5 / 4) / sqrt(5)
    assert c["ci95"] == pytest.approx([-0.0126 - 0.005663, -0.0126 + 0.005663], abs=2e-5)
    assert c["verdict"] == "reproduced"


def test_tuned_sgd_momentum_behind_adam(regraded):
    # Adam 4.6 4.8 4.5%; SGD-momentum 5.2 7.1 10.7% (seeds 0, 1, 2): +0.6 +2.3 +6.2 points.
    c = _claim(regraded, "optimizers", "tuned SGD with momentum")
    assert c["seeds"] == [0, 1, 2]
    assert c["mean"] == pytest.approx(0.030333, abs=1e-6)
    assert c["verdict"] == "not reproduced"


def test_cosine_against_constant_is_partly(regraded):
    # Cosine is ahead on all three seeds (-1.9, -0.2, -1.2 points), but with 3 seeds the interval reaches 0.
    c = _claim(regraded, "learning_rate_schedules",
               "decaying the rate (cosine, from 0.1) ends at a lower validation error than the constant 0.1")
    assert c["difference"]["values"] == pytest.approx([-0.019, -0.002, -0.012], abs=1e-12)
    assert c["ci95"][0] < 0 < c["ci95"][1]
    assert c["verdict"] == "partly"


def test_single_seed_experiments_are_not_tested(regraded):
    for name in ("batchnorm_effect", "residual_depth", "activation_functions", "regularization_small_data",
                 "early_stopping", "batchnorm_batch_size"):
        record = regraded[1]["experiments"][name]
        assert record["seeds_run"] == 1
        assert set(record["verdicts"]) == {"not tested"}
        assert record["rerun_5_seeds_minutes"] == pytest.approx(record["wall_time_s"] * 5 / 60)
