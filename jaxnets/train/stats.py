"""Statistics over seeds: mean, standard deviation, standard error and a Student-t confidence interval.

    from jaxnets.train import stats
    e = stats.estimate([0.021, 0.019, 0.024])   # Estimate(n=3, mean=0.0213, std=..., sem=..., ci95=(lo, hi))
    stats.t_quantile(0.975, 4)                   # 2.7764451051977987 (scipy.stats.t.ppf(0.975, 4))

Plain Python floats in float64 (the `math` module), whatever JAX's x64 setting: these run on a handful
of numbers per grid point, on the host. No scipy: the Student t quantile is found by bisection on its
distribution function, written with the regularized incomplete beta function (a continued fraction).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from jaxnets.checks import check_real, is_real

__all__ = ["Estimate", "estimate", "t_cdf", "t_quantile"]

_EPS = 1e-16      # relative accuracy of the continued fraction (float64)
_TINY = 1e-300    # Lentz's guard against a zero denominator
_MAX_TERMS = 10_000


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging fast for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_TERMS + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def _log_gamma_ratio(a: float, b: float) -> float:
    """log(Gamma(a + b) / Gamma(a)); for large `a` by Stirling's series, where `lgamma(a + b) - lgamma(a)`
    would lose the digits of two nearly equal large numbers."""
    if a < 100.0:
        return math.lgamma(a + b) - math.lgamma(a)

    def correction(z: float) -> float:  # Stirling: lgamma(z) = (z - 1/2) log z - z + log(2 pi) / 2 + this
        return 1.0 / (12.0 * z) - 1.0 / (360.0 * z ** 3) + 1.0 / (1260.0 * z ** 5)

    return b * math.log(a) + (a + b - 0.5) * math.log1p(b / a) - b + correction(a + b) - correction(a)


def _t_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: I_x(df / 2, 1 / 2) / 2 with x = df / (df + t^2), computed without cancellation."""
    if t == 0.0:
        return 0.5
    a, b = 0.5 * df, 0.5
    ratio = t * t / df
    # log of x^a (1 - x)^b / B(a, b), with log x = -log1p(t^2 / df) and 1 - x = t^2 / (df + t^2) written
    # directly (not as 1 - x, which would cancel)
    log_front = (_log_gamma_ratio(a, b) - math.lgamma(b) - a * math.log1p(ratio)
                 + b * (math.log(ratio) - math.log1p(ratio)))
    x, one_minus_x = 1.0 / (1.0 + ratio), ratio / (1.0 + ratio)
    if x < (a + 1.0) / (a + b + 2.0):
        incomplete = math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    else:  # the symmetry I_x(a, b) = 1 - I_{1-x}(b, a), where the fraction converges
        incomplete = 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, one_minus_x) / b
    return 0.5 * incomplete


def _check_df(fn: str, df) -> float:
    return check_real(fn, "df", df, minimum=0.0, min_inclusive=False)  # degrees of freedom


def t_cdf(t: float, df: float) -> float:
    """The distribution function P(T <= t) of Student's t with `df` degrees of freedom.

    Args:
      t: a real number (+-inf allowed).
      df: degrees of freedom, a real number > 0 (not necessarily an integer).
    Returns: a float in [0, 1]. SciPy: `scipy.stats.t.cdf(t, df)`.
    Raises: TypeError for a non-real `t` or `df` (a bool included); ValueError for `df <= 0`, a
      non-finite `df` or a nan `t`.
    """
    fn = "t_cdf"
    df = _check_df(fn, df)
    if not is_real(t):
        raise TypeError(f"{fn}: t must be a real number, got {type(t).__name__} {t!r}.")
    t = float(t)
    if math.isnan(t):
        raise ValueError(f"{fn}: t must be a real number or +-inf, got {t}.")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = _t_tail(abs(t), df)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The quantile of Student's t: the `t` with `P(T <= t) = q`, for `df` degrees of freedom.

    Closed forms for df = 1 (Cauchy: `tan(pi (q - 1/2))`) and df = 2 (`(2q - 1) sqrt(2 / (4 q (1 - q)))`);
    otherwise bisection on the tail probability `P(T > t)` (`t_cdf`) until the bracket is a few units in
    the last place wide, so the result is accurate to about 1e-13 relative.

    Args:
      q: probability in (0, 1), e.g. 0.975 for a two-sided 95% interval.
      df: degrees of freedom, a real number > 0 (n - 1 for the mean of n values).
    Returns: a float. SciPy: `scipy.stats.t.ppf(q, df)`.
    Raises: TypeError for a non-real `q` or `df` (a bool included); ValueError for `q` outside (0, 1),
      `df <= 0` or non-finite.
    """
    fn = "t_quantile"
    df = _check_df(fn, df)
    q = check_real(fn, "q", q, minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
    if q == 0.5:
        return 0.0
    if df == 1.0:  # tan(pi (q - 1/2)) = -cot(pi q), written without the cancellation in q - 1/2
        return -1.0 / math.tan(math.pi * q) if q < 0.5 else 1.0 / math.tan(math.pi * (1.0 - q))
    if df == 2.0:
        return (2.0 * q - 1.0) * math.sqrt(2.0 / (4.0 * q * (1.0 - q)))
    tail = 1.0 - q if q > 0.5 else q  # solve P(T > t) = tail for t > 0, then restore the sign
    lo, hi = 0.0, 1.0
    while _t_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 4.0 * math.ulp(hi):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_tail(mid, df) > tail:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return t if q > 0.5 else -t


@dataclasses.dataclass(frozen=True)
class Estimate:
    """The mean of `n` values with its spread.

    Attributes:
      n: number of values.
      mean: their mean (nan when n = 0).
      std: sample standard deviation, ddof = 1 (nan when n < 2).
      sem: standard error of the mean, `std / sqrt(n)` (nan when n < 2).
      ci95: the 95% confidence interval of the mean, `mean -+ t_{0.975, n-1} * sem` (Student's t with
        n - 1 degrees of freedom), as `(lo, hi)`; `(nan, nan)` when n < 2.
    """

    n: int
    mean: float
    std: float
    sem: float
    ci95: tuple[float, float]


def estimate(values: Sequence[float]) -> Estimate:
    """Mean, standard deviation (ddof = 1), standard error and 95% Student-t interval of `values`.

    With one value, `std`, `sem` and `ci95` are nan: one seed says nothing about the spread. With none,
    `mean` is nan too.

    Args:
      values: finite real numbers (e.g. one metric over seeds); leave out diverged runs first.
    Returns: an `Estimate`. NumPy/SciPy: `mean`, `std(ddof=1)`, `scipy.stats.sem`,
      `scipy.stats.t.interval(0.95, n - 1, mean, sem)`.
    Raises: TypeError for a non-real value (a bool included); ValueError for a non-finite one.
    """
    fn = "estimate"
    values = [float(check_real(fn, f"values[{i}]", v)) for i, v in enumerate(values)]
    n = len(values)
    nan = math.nan
    if n == 0:
        return Estimate(0, nan, nan, nan, (nan, nan))
    mean = math.fsum(values) / n
    if n == 1:
        return Estimate(1, mean, nan, nan, (nan, nan))
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    sem = std / math.sqrt(n)
    half = t_quantile(0.975, n - 1) * sem  # two-sided 95%: the 97.5% quantile
    return Estimate(n, mean, std, sem, (mean - half, mean + half))
