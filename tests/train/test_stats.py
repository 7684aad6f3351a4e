"""Tests of jaxnets/train/stats.py: the Student t quantile and cdf against scipy (tests only) and hand values,
`estimate` against numpy/scipy."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxnets.train.stats import Estimate, estimate, t_cdf, t_quantile

DFS = [0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 29, 100, 1000, 1e6]
QS = [1e-12, 1e-6, 0.001, 0.025, 0.05, 0.3, 0.5, 0.51, 0.9, 0.975, 0.995, 1 - 1e-9]


@pytest.mark.parametrize("df", DFS)
def test_t_quantile_matches_scipy(df):
    for q in QS:
        expected = scipy_stats.t.ppf(q, df)
        assert t_quantile(q, df) == pytest.approx(expected, rel=1e-10, abs=1e-300), (q, df)


def test_t_quantile_hand_values():
    # Printed tables (two-sided 95%: the 0.975 quantile): df 1 -> 12.706, 2 -> 4.303, 4 -> 2.776, 10 -> 2.228.
    assert t_quantile(0.975, 1) == pytest.approx(12.706204736174707, rel=1e-13)  # tan(0.475 pi)
    assert t_quantile(0.975, 2) == pytest.approx(4.302652729749464, rel=1e-13)   # sqrt(2 / (4 q (1 - q))) (2q - 1)
    assert round(t_quantile(0.975, 4), 3) == 2.776 and round(t_quantile(0.975, 10), 3) == 2.228
    assert t_quantile(0.5, 3) == 0.0 and t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7), rel=1e-14)
    assert t_quantile(0.975, 1e9) == pytest.approx(1.959963984540054, rel=1e-7)  # the normal quantile


@pytest.mark.parametrize("df", [1, 2.5, 9])
def test_t_cdf_matches_scipy_and_inverts_the_quantile(df):
    for t in [-math.inf, -80.0, -3.0, -0.1, 0.0, 0.2, 2.0, 40.0, math.inf]:
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-12, abs=1e-15)
    for q in (0.01, 0.6, 0.975):
        assert t_cdf(t_quantile(q, df), df) == pytest.approx(q, rel=1e-12)


def test_t_errors():
    with pytest.raises(ValueError, match=r"t_quantile: q must be a finite real number in \(0.0, 1.0\), got 1.0"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match=r"t_quantile: q must be a finite real number in \(0.0, 1.0\), got 0.0"):
        t_quantile(0, 3)
    with pytest.raises(ValueError, match=r"t_quantile: df must be a finite real number > 0.0, got 0.0"):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError, match=r"t_quantile: df must be a finite real number > 0.0, got inf"):
        t_quantile(0.975, math.inf)
    with pytest.raises(TypeError, match=r"t_quantile: df must be a real number > 0.0, got bool True"):
        t_quantile(0.975, True)
    with pytest.raises(TypeError, match=r"t_quantile: q must be a real number in \(0.0, 1.0\), got str '0.9'"):
        t_quantile("0.9", 3)
    with pytest.raises(ValueError, match=r"t_cdf: t must be a real number or \+-inf, got nan"):
        t_cdf(math.nan, 3)
    with pytest.raises(TypeError, match=r"t_cdf: t must be a real number, got NoneType None"):
        t_cdf(None, 3)


def test_estimate_matches_numpy_and_scipy():
    values = [0.021, 0.019, 0.024, 0.020, 0.0305]
    e = estimate(values)
    sem = scipy_stats.sem(values)
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert e.n == 5 and e.mean == pytest.approx(np.mean(values), rel=1e-15)
    assert e.std == pytest.approx(np.std(values, ddof=1), rel=1e-14) and e.sem == pytest.approx(sem, rel=1e-14)
    assert e.ci95 == pytest.approx((lo, hi), rel=1e-12)
    # By hand: 2 values 1 and 3: mean 2, std sqrt(2), sem 1, half-width t_{0.975, 1} = 12.7062...
    e2 = estimate([1, 3])
    assert (e2.mean, e2.sem) == (2.0, 1.0) and e2.std == pytest.approx(math.sqrt(2))
    assert e2.ci95 == pytest.approx((2 - 12.706204736174707, 2 + 12.706204736174707), rel=1e-13)


def test_estimate_of_one_and_no_values_is_nan_where_undefined():
    one = estimate([0.5])
    assert (one.n, one.mean) == (1, 0.5) and all(math.isnan(v) for v in (one.std, one.sem, *one.ci95))
    none = estimate([])
    assert none.n == 0 and math.isnan(none.mean) and isinstance(none, Estimate)


def test_estimate_errors():
    with pytest.raises(ValueError, match=r"estimate: values\[1\] must be a finite real number, got nan"):
        estimate([1.0, math.nan])
    with pytest.raises(TypeError, match=r"estimate: values\[0\] must be a real number, got bool True"):
        estimate([True, 1.0])
