"""sslkit.eval.intervals against scipy's Student t and a hand-computed case."""
import math

import pytest
from scipy import stats

from sslkit.eval.intervals import mean_interval, ratio_interval, t_quantile


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30, 31, 200])
def test_t_quantile_is_scipys(df):
    expected = stats.t.ppf(0.975, df) if df <= 30 else stats.norm.ppf(0.975)
    assert t_quantile(df) == pytest.approx(expected, rel=2e-4 if df <= 30 else 1e-6)


def test_mean_interval_by_hand_and_against_scipy():
    values = [1.0, 2.0, 3.0]  # mean 2, sd 1: half-width t_{0.975,2} / sqrt(3) = 4.3027 / 1.7321
    interval = mean_interval(values)
    assert interval.estimate == 2.0 and interval.high - 2.0 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    low, high = stats.t.interval(0.95, 2, loc=2.0, scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-4)
    assert interval.excludes(5.0) and not interval.excludes(0.0)  # 3 values of sd 1: the interval spans 0


def test_ratio_interval_is_the_log_scale_interval_mapped_back():
    a, b = [2.0, 4.0, 3.0, 5.0], [1.0, 1.0, 2.0, 2.0]
    logs = [math.log(x / y) for x, y in zip(a, b)]
    low, high = stats.t.interval(0.95, 3, loc=sum(logs) / 4, scale=stats.sem(logs))
    interval = ratio_interval(a, b)
    assert interval.estimate == pytest.approx(math.exp(sum(logs) / 4))
    assert (interval.low, interval.high) == pytest.approx((math.exp(low), math.exp(high)), rel=1e-4)
    assert interval.low < interval.estimate < interval.high and interval.excludes(1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 2 values"):
        mean_interval([1.0])
    with pytest.raises(ValueError, match="positive"):
        ratio_interval([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="as many"):
        ratio_interval([1.0, 2.0], [1.0])
