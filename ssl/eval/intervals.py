"""Confidence intervals for figures over seeds: Student's t interval of a mean, and of a ratio
through the mean of its logarithms (a same-seed ratio of positive quantities is multiplicative,
so its interval is taken on the log scale and mapped back: a geometric mean with asymmetric
bounds). A figure from a few seeds carries its interval; a claim is what the interval supports.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# two-sided 95% quantiles of Student's t, t_{0.975, df} for df = 1 ... 30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
         2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
         2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile(df: int) -> float:
    """``t_{0.975, df}``, the multiplier of a two-sided 95% interval (the normal 1.96 beyond 30
    degrees of freedom, where the two differ by under 2%)."""
    if df < 1:
        raise ValueError(f"an interval needs at least 2 values (1 degree of freedom), got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.959964


@dataclass(frozen=True)
class Interval:
    """``estimate`` with its 95% interval ``[low, high]`` from ``n`` values."""

    estimate: float
    low: float
    high: float
    n: int

    def excludes(self, value: float) -> bool:
        """Whether ``value`` lies outside the interval: what a claim of a difference needs."""
        return not self.low <= value <= self.high

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}] (n={self.n})"


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` (e.g. one per seed) with Student's t 95% interval,
    ``mean +- t_{0.975, n-1} sd / sqrt(n)``."""
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}")
    mean = statistics.fmean(values)
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float]) -> Interval:
    """The geometric mean of same-seed ratios ``numerators[i] / denominators[i]`` with the 95%
    interval of the mean log-ratio mapped back (``exp(mean +- t sd / sqrt(n))``): the error of
    both figures propagated through the pairing, for positive quantities."""
    if len(numerators) != len(denominators):
        raise ValueError(f"same-seed ratios need as many numerators as denominators, got {len(numerators)} "
                         f"and {len(denominators)}")
    if any(v <= 0 for v in [*numerators, *denominators]):
        raise ValueError("ratio_interval is for positive quantities (a log-ratio); got a value <= 0")
    logs = mean_interval([math.log(a / b) for a, b in zip(numerators, denominators)])
    return Interval(math.exp(logs.estimate), math.exp(logs.low), math.exp(logs.high), logs.n)
