"""experiments/_protocol.py: paired differences and the verdict rule, against hand-computed answers."""
import math

import matplotlib
import numpy as np
import pytest

from experiments import _protocol as protocol

matplotlib.use("Agg")


def test_paired_is_the_estimate_of_per_seed_differences():
    a, b = [0.10, 0.12, 0.11, 0.13, 0.09], [0.08, 0.11, 0.08, 0.12, 0.08]
    d = protocol.paired(a, b)
    diffs = np.array(b) - np.array(a)
    assert d["n"] == 5 and d["mean"] == pytest.approx(diffs.mean(), abs=1e-15)
    assert d["sem"] == pytest.approx(diffs.std(ddof=1) / math.sqrt(5), rel=1e-12)
    half = 2.7764451051977987 * d["sem"]  # scipy.stats.t.ppf(0.975, 4)
    assert d["ci95"] == pytest.approx([d["mean"] - half, d["mean"] + half], rel=1e-12)


def test_paired_drops_a_diverged_seed_from_both_sides():
    d = protocol.paired([0.1, float("nan"), 0.3], [0.2, 0.1, 0.5])
    assert d["n"] == 2 and d["n_nonfinite"] == 1 and d["mean"] == pytest.approx(0.15)


def test_paired_needs_the_same_seeds():
    with pytest.raises(ValueError, match="paired: a and b"):
        protocol.paired([0.1, 0.2], [0.1])


@pytest.mark.parametrize("b, direction, min_effect, expected", [
    ([0.05, 0.06, 0.05, 0.06, 0.05], "lower", 0.03, "reproduced"),     # -0.046 +- small: clear and large
    ([0.05, 0.06, 0.05, 0.06, 0.05], "lower", 0.08, "partly"),         # clear but smaller than claimed
    ([0.05, 0.06, 0.05, 0.06, 0.05], "higher", 0.0, "not reproduced"),  # the other way
    ([0.07, 0.11, 0.09, 0.12, 0.06], "lower", 0.0, "partly"),          # the right way, interval reaches 0
])
def test_verdict_rule(b, direction, min_effect, expected):
    a = [0.10, 0.10, 0.10, 0.10, 0.10]
    assert protocol.verdict(protocol.paired(a, b), direction=direction, min_effect=min_effect) == expected


@pytest.mark.parametrize("b, margin, expected", [
    ([0.10, 0.11, 0.09, 0.10, 0.10], 0.02, "reproduced"),      # mean 0, ci +-0.0088: inside +-0.02
    ([0.10, 0.11, 0.09, 0.10, 0.10], 0.005, "partly"),         # same data, a margin the ci crosses
    ([0.15, 0.16, 0.15, 0.16, 0.15], 0.03, "not reproduced"),  # +0.054, clearly beyond the margin
    ([0.15, 0.16, 0.15, 0.16, 0.15], 0.08, "reproduced"),      # ci [0.047, 0.061]: a difference, but inside
    ([0.15, 0.16, 0.15, 0.16, 0.15], 0.055, "partly"),         # mean below the margin, the ci crosses it
])
def test_verdict_rule_for_no_difference(b, margin, expected):
    a = [0.10, 0.10, 0.10, 0.10, 0.10]
    assert protocol.verdict(protocol.paired(a, b), direction="same", min_effect=margin) == expected


def test_verdict_without_a_spread_is_not_tested():
    assert protocol.verdict(protocol.paired([0.1], [0.0]), direction="lower") == "not tested"
    with pytest.raises(ValueError, match="verdict: direction"):
        protocol.verdict(protocol.paired([0.1, 0.2], [0.0, 0.1]), direction="down")
    with pytest.raises(ValueError, match="needs min_effect > 0"):
        protocol.verdict(protocol.paired([0.1, 0.2], [0.0, 0.1]), direction="same")


def test_describe_and_band():
    assert protocol.describe([0.061, 0.065, 0.063], scale=100, unit="%") == "6.3 +- 0.1%"
    assert protocol.describe([0.061], scale=100, unit="%") == "6.1% (1 seed)"
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    line = protocol.band(ax, [1, 2], [[1.0, 2.0], [3.0, float("nan")]])
    np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0])
    plt.close(fig)
