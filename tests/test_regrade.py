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


def test_tuned_sgd_momentum_behind_adam_is_not_reproduced(regraded):
    # Test error after 1,240 steps, cosine to 0, 5 paired seeds. Adam (tuned 1e-2): 2.4 3.3 2.3 2.5 3.7%;
    # SGD-momentum (tuned 0.03): 3.3 4.2 3.7 3.6 3.6%: +0.9 +0.9 +1.4 +1.1 -0.1 points, mean 0.84, squared
    # deviations sum 1.272, sem sqrt(1.272 / 4 / 5) = 0.25219, interval 0.84 -+ 2.776 x 0.25219 = [0.140, 1.540].
    c = _claim(regraded, "optimizers", "tuned SGD with momentum")
    assert c["seeds"] == [0, 1, 2, 3, 4]
    assert c["difference"]["values"] == pytest.approx([0.009, 0.009, 0.014, 0.011, -0.001], abs=1e-12)
    assert c["mean"] == pytest.approx(0.0084, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0025219, abs=1e-6)
    assert c["ci95"] == pytest.approx([0.00140, 0.01540], abs=2e-5)
    assert (c["direction"], c["min_effect"], c["verdict"]) == ("lower", 0.002, "not reproduced")


def test_switching_rates_without_retuning_is_partly(regraded):
    # SGD-momentum at its own 0.03: 3.3 4.2 3.7 3.6 3.6%; at Adam's 1e-2: 4.1 4.7 3.9 3.8 4.3%: +0.8 +0.5 +0.2
    # +0.2 +0.7 points, mean 0.48, squared deviations sum 0.308, sem sqrt(0.308 / 4 / 5) = 0.12410, interval
    # 0.48 -+ 2.776 x 0.12410 = [0.136, 0.824]: above 0, but the mean is under the 0.5-point min_effect.
    c = _claim(regraded, "optimizers", "learning rates are not comparable")
    assert c["difference"]["values"] == pytest.approx([0.008, 0.005, 0.002, 0.002, 0.007], abs=1e-12)
    assert c["mean"] == pytest.approx(0.0048, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0012410, abs=1e-6)
    assert c["ci95"] == pytest.approx([0.00136, 0.00824], abs=2e-5)
    assert (c["direction"], c["min_effect"], c["verdict"]) == ("higher", 0.005, "partly")


def test_adam_default_rate_is_not_as_good_as_tuned(regraded):
    # Adam at 1e-3: 4.1 4.5 3.4 3.9 4.2%; at its tuned 1e-2: 2.4 3.3 2.3 2.5 3.7%: +1.7 +1.2 +1.1 +1.4 +0.5
    # points, mean 1.18, squared deviations sum 0.788, sem sqrt(0.788 / 4 / 5) = 0.19849, interval
    # 1.18 -+ 2.776 x 0.19849 = [0.629, 1.731]: excludes 0 and the mean exceeds the 0.5-point margin.
    c = _claim(regraded, "optimizers", "Adam is a good default")
    assert c["difference"]["values"] == pytest.approx([0.017, 0.012, 0.011, 0.014, 0.005], abs=1e-12)
    assert c["mean"] == pytest.approx(0.0118, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0019849, abs=1e-6)
    assert c["ci95"] == pytest.approx([0.00629, 0.01731], abs=2e-5)
    assert (c["direction"], c["min_effect"], c["verdict"]) == ("same", 0.005, "not reproduced")
    # the pilot-seed reading of "harder to tune" has one seed: not tested
    assert _claim(regraded, "optimizers", "SGD with momentum is harder")["verdict"] == "not tested"


def test_cosine_against_constant_is_reproduced(regraded):
    # constant 0.1: 12.7 6.8 6.9 7.5 7.8%; cosine 5.0 5.1 4.7 6.1 4.6% (seeds 0-4): -7.7 -1.7 -2.2 -1.4 -3.2
    # points, mean -3.24, squared deviations sum 26.732, sem 1.1561, interval [-6.449, -0.031]: below 0.
    c = _claim(regraded, "learning_rate_schedules",
               "decaying the rate (cosine, from 0.1) ends at a lower validation error than the constant 0.1")
    assert c["seeds"] == [0, 1, 2, 3, 4]
    assert c["difference"]["values"] == pytest.approx([-0.077, -0.017, -0.022, -0.014, -0.032], abs=1e-12)
    assert c["mean"] == pytest.approx(-0.0324, abs=1e-12)
    assert c["sem"] == pytest.approx(0.011561, abs=1e-6)
    assert c["ci95"] == pytest.approx([-0.06449, -0.00031], abs=2e-5)
    assert c["verdict"] == "reproduced"


def test_recomputed_statistics_after_600_steps_are_reproduced(regraded):
    # running 6.0 3.0 8.1 5.7 5.4%; recomputed 3.9 3.0 4.4 3.5 4.2% (seeds 0-4): -2.1 0.0 -3.7 -2.2 -1.2 points,
    # mean -1.84, squared deviations sum 7.452, sem sqrt(7.452 / 4 / 5) = 0.61041, interval -1.84 -+ 1.69451.
    c = _claim(regraded, "batchnorm_test_statistics", "recomputed population statistics are at least as good as "
               "running averages, better early: after 600 steps")
    assert c["seeds"] == [0, 1, 2, 3, 4]
    assert c["difference"]["values"] == pytest.approx([-0.021, 0.0, -0.037, -0.022, -0.012], abs=1e-12)
    assert c["mean"] == pytest.approx(-0.0184, abs=1e-12)
    assert c["sem"] == pytest.approx(0.0061041, abs=1e-6)
    assert c["ci95"] == pytest.approx([-0.035345, -0.001455], abs=2e-5)
    assert c["verdict"] == "reproduced"
    # after 300 steps one seed's running averages sit at 26.4% (-22.2 points): the interval reaches 0.
    assert _claim(regraded, "batchnorm_test_statistics", "recomputed population statistics are at least as "
                  "good as running averages, better early: after 300 steps")["verdict"] == "partly"
    assert regraded[1]["experiments"]["batchnorm_test_statistics"]["seeds_run"] == 5


def test_single_seed_experiments_are_not_tested(regraded):
    for name in ("batchnorm_effect", "early_stopping"):
        record = regraded[1]["experiments"][name]
        assert record["seeds_run"] == 1
        assert set(record["verdicts"]) == {"not tested"}
        assert record["rerun_5_seeds_minutes"] == pytest.approx(record["wall_time_s"] * 5 / 60)


def test_batchnorm_batch_size_is_graded_on_five_paired_seeds(regraded):
    record = regraded[1]["experiments"]["batchnorm_batch_size"]
    assert record["seeds_run"] == 5 and record["rerun_5_seeds_minutes"] == 0.0
    assert len(record["claims"]) == 3
    for claim in record["claims"]:
        assert claim["kind"] == "paired" and claim["seeds"] == [0, 1, 2, 3, 4]
        assert claim["min_effect"] == 0.01
        assert claim["verdict"] in ("reproduced", "partly", "not reproduced")


def test_activation_functions_is_graded_on_five_paired_seeds(regraded):
    record = regraded[1]["experiments"]["activation_functions"]
    assert record["seeds_run"] == 5
    sigmoid = _claim(regraded, "activation_functions", "sigmoid fails")
    assert sigmoid["seeds"] == [0, 1, 2, 3, 4] and sigmoid["min_effect"] == 0.5
    assert sigmoid["verdict"] == "reproduced"
    assert _claim(regraded, "activation_functions", "ELU converges faster than tanh")["verdict"] == "reproduced"


def test_residual_depth_is_graded_on_five_paired_seeds(regraded):
    record = regraded[1]["experiments"]["residual_depth"]
    assert record["seeds_run"] == 5
    # the per-seed differences plain 32 - plain 8 as committed: all > 0
    plain = _claim(regraded, "residual_depth", "a deeper plain network")
    assert plain["seeds"] == [0, 1, 2, 3, 4] and plain["min_effect"] == 0.01
    assert min(plain["difference"]["values"]) > 0 and plain["verdict"] == "reproduced"
    # residual 32 - residual 8: 0.5 0.3 0.2 0.4 0.5 points; the deeper residual net is slightly worse
    res = _claim(regraded, "residual_depth", "residual blocks let")
    assert res["difference"]["values"] == pytest.approx([0.005, 0.003, 0.002, 0.004, 0.005], abs=1e-12)
    assert res["mean"] == pytest.approx(0.0038, abs=1e-12)
    assert res["verdict"] == "not reproduced"
    assert _claim(regraded, "residual_depth", "at 32 layers")["verdict"] == "reproduced"
