"""Loss and bypass detection: fires on a leak, stays quiet on metering noise, with hysteresis."""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from eschaton.core.microgrid.errors import BadTerms, MeterRegression
from eschaton.core.microgrid.ledger import EntryKind
from eschaton.core.microgrid.loss import LossAlarm, LossCleared, LossConfig, LossDetector, LossEvent

DOWN = ("house-a", "house-b", "house-c")
CONFIG = LossConfig(bulk_meter="well", downstream=frozenset(DOWN), window_ms=600_000,
                    alarm_abs_units=2_000, alarm_rel_ppm=20_000,
                    clear_abs_units=1_000, clear_rel_ppm=10_000)
MINUTE = 60_000


def simulate(minutes: int, leak_ml_per_s: Callable[[int], int], *, seed: int,
             accuracy_ppm: int = 5_000, resolution_ml: int = 10,
             config: LossConfig = CONFIG) -> list[LossEvent]:
    """Houses draw varying flows; the bulk meter sees their sum plus a leak. Every meter has a
    fixed accuracy error (within +-accuracy_ppm), a counting resolution, and is read every 30 s
    at its own offset, so no two meters are read at the same instant."""
    rng = random.Random(seed)
    errors = {m: rng.randint(-accuracy_ppm, accuracy_ppm) for m in (config.bulk_meter, *DOWN)}
    offsets = {m: rng.randrange(0, 30_000) for m in errors}
    true = dict.fromkeys(errors, 0)  # true cumulative mL
    det = LossDetector(config)
    events: list[LossEvent] = []
    for second in range(minutes * 60):
        minute = second // 60
        draw = {h: (rng.choice([0, 0, 40, 120, 250]) if second % 20 == 0 else 0) for h in DOWN}
        for h, ml in draw.items():
            true[h] += ml
        true[config.bulk_meter] += sum(draw.values()) + leak_ml_per_s(minute)
        for m in errors:
            if (second * 1000 - offsets[m]) % 30_000 < 1000:
                shown = true[m] * (1_000_000 + errors[m]) // 1_000_000
                shown -= shown % resolution_ml
                events += det.on_reading(m, shown, second * 1000 + offsets[m] % 1000)
    return events


@pytest.mark.parametrize("seed", range(6))
def test_no_alarm_on_metering_noise(seed: int) -> None:
    assert simulate(180, lambda _m: 0, seed=seed) == []


def test_leak_raises_one_alarm_and_clears_after_repair() -> None:
    events = simulate(120, lambda m: 8 if 30 <= m < 70 else 0, seed=1)
    assert [type(e) for e in events] == [LossAlarm, LossCleared]
    alarm, cleared = events
    assert 30 * MINUTE < alarm.window_end_ms <= 42 * MINUTE  # within a window of the leak
    assert alarm.loss_units > CONFIG.alarm_abs_units
    assert 70 * MINUTE < cleared.window_end_ms <= 82 * MINUTE
    assert alarm.entry().kind is EntryKind.LOSS_ALARM
    assert cleared.entry().body["loss_units"] == cleared.loss_units


def test_night_leak_with_no_consumption() -> None:
    det = LossDetector(CONFIG)
    events: list[LossEvent] = []
    for minute in range(0, 31):
        t = minute * MINUTE
        for h in DOWN:
            events += det.on_reading(h, 5_000, t + 7)
        events += det.on_reading("well", 15_000 + 300 * minute, t)  # 5 mL/s into the ground
    assert [type(e) for e in events] == [LossAlarm]
    assert events[0].loss_units == 3_000 and events[0].downstream_units == 0


def test_hysteresis_does_not_flap_around_the_threshold() -> None:
    # A leak alternating just above and just below the alarm level (but above the clear level).
    events = simulate(150, lambda m: 6 if (m // 10) % 2 == 0 else 3, seed=2)
    assert [type(e) for e in events] == [LossAlarm]


def test_relative_threshold_ignores_a_small_share_of_a_big_flow() -> None:
    det = LossDetector(CONFIG)
    events: list[LossEvent] = []
    for minute in range(0, 21):
        t = minute * MINUTE
        down = 100_000 * minute  # 100 L/min through house-a
        events += det.on_reading("house-a", down, t)
        events += det.on_reading("house-b", 0, t)
        events += det.on_reading("house-c", 0, t)
        events += det.on_reading("well", down * 1_015 // 1_000, t)  # 1.5% unexplained < 2%
    assert events == [] and det.last_loss is not None and det.last_loss > CONFIG.alarm_abs_units


def test_bad_inputs() -> None:
    with pytest.raises(BadTerms):
        LossConfig("well", frozenset({"well"}), 1000, 1, 1, 0, 0)
    with pytest.raises(BadTerms):
        LossConfig("well", frozenset({"a"}), 1000, 1, 1, 2, 0)  # clear above alarm
    det = LossDetector(CONFIG)
    det.on_reading("well", 100, 1000)
    with pytest.raises(MeterRegression):
        det.on_reading("well", 99, 2000)
