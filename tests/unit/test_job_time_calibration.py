"""The job-time calibration table is consistent with the measurements it records: each factor is the median of its
measured ratios, and every measurement lies within 1.5× of it (issue 20's bound: an estimate within ~1.5× of the
measured time on the machine it was calibrated on). A new measurement that misses is caught here, not in a demo."""

from __future__ import annotations

import statistics
from typing import get_args

import pytest

from headscope.job_time import CALIBRATION, Calibration, JobKind


def test_every_job_kind_has_one_calibration():
    assert set(CALIBRATION) == set(get_args(JobKind))


@pytest.mark.parametrize("kind", list(CALIBRATION))
def test_each_factor_is_the_median_of_its_measurements_and_all_lie_within_one_and_a_half_times(kind):
    calibration = CALIBRATION[kind]
    assert calibration.ratios and all(ratio > 0 for ratio in calibration.ratios)
    assert calibration.factor == pytest.approx(statistics.median(calibration.ratios), rel=0.01)
    assert calibration.spread() <= 1.5
    assert calibration.measured  # where the numbers come from


def test_the_spread_is_the_worst_ratio_either_way():
    assert Calibration(2.0, (1.0, 2.0, 3.0), "example").spread() == pytest.approx(2.0)  # 2.0 / 1.0
    assert Calibration(2.0, (2.0, 2.0), "example").spread() == pytest.approx(1.0)
