"""Arrival times: requested mean rate and dispersion, reproducible by seed."""

import numpy as np
import pytest

from bench.instrument.schedule import arrival_times, load_point_name


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_gamma_arrivals_have_requested_rate_and_dispersion(burstiness):
    rate, n = 20.0, 20000
    gaps = np.diff(arrival_times(n, rate, burstiness, seed=7))
    # mean gap 1/rate within 3 standard errors; coefficient of variation 1/sqrt(shape)
    cv = 1 / np.sqrt(burstiness)
    assert abs(gaps.mean() - 1 / rate) < 3 * (cv / rate) / np.sqrt(n)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_poisson_counts_are_poisson():
    times = np.array(arrival_times(40000, 10.0, 1.0, seed=3))
    counts = np.histogram(times, bins=np.arange(0, times[-1] // 1))[0]
    assert counts.mean() == pytest.approx(10.0, rel=0.03)
    assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.1)  # index of dispersion


def test_same_seed_same_schedule_other_seed_other_schedule():
    assert arrival_times(100, 5.0, 1.0, seed=1) == arrival_times(100, 5.0, 1.0, seed=1)
    assert arrival_times(100, 5.0, 1.0, seed=1) != arrival_times(100, 5.0, 1.0, seed=2)


def test_load_point_names():
    assert load_point_name(8, None) == "c8"
    assert load_point_name(None, 2.5) == "r2.5"
    assert load_point_name(64, 2.5) == "r2.5-c64"
