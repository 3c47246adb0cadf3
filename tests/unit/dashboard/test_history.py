"""The plots' history: bounded tiers, rates averaged over each tier's step."""
from __future__ import annotations

import pytest

from eschaton.dashboard.history import TIERS, MeterHistory


def test_each_tier_keeps_one_point_per_step_over_its_span_with_the_mean_rate() -> None:
    h = MeterHistory()
    end = 8 * 86_400  # a week and a day: a sample every 10 s, then every second; 0.5 units/s
    for s in [*range(0, end - 4000, 10), *range(end - 4000, end)]:
        h.add("water", float(s), s * 0.5)
    for tier, (span, step) in TIERS.items():
        pts = h.series("water", tier)
        assert len(pts) <= span / step + 1, tier
        assert pts[-1][0] - pts[0][0] <= span
        assert all(b[0] - a[0] >= step for a, b in zip(pts, pts[1:], strict=False)), tier
        assert all(p[2] == pytest.approx(0.5) for p in pts[1:]), tier
    assert h.series("other", "hour") == [] and h.meters() == ["water"]
    with pytest.raises(KeyError):
        h.series("water", "year")


def test_a_total_that_goes_back_counts_no_negative_rate() -> None:
    h = MeterHistory()
    h.add("m", 0.0, 10.0)
    h.add("m", 2.0, 4.0)  # a replaced meter: the plot shows 0, not a negative flow
    assert h.series("m", "hour")[-1][2] == 0.0
