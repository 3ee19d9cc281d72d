"""The judge's clock stops over camera outages and maps evidence back to stream time."""

from __future__ import annotations

import pytest

from server.assessment import OUTAGE_GAP_S, JudgingClock


def test_no_outage_is_stream_time() -> None:
    clock = JudgingClock()
    times = [index * 0.05 for index in range(100)]
    assert [clock.judging_s(time_s) for time_s in times] == times
    assert clock.stream_s(2.5) == 2.5


def test_skipped_frames_are_not_an_outage() -> None:
    clock = JudgingClock()
    clock.judging_s(0.0)
    assert clock.judging_s(0.4) == pytest.approx(0.4)


def test_outage_is_cut_out_and_mapped_back() -> None:
    clock = JudgingClock()
    for index in range(21):
        clock.judging_s(index * 0.05)  # 0 .. 1.0 s
    outage_s = 5.0
    resumed = clock.judging_s(1.0 + outage_s)
    assert outage_s > OUTAGE_GAP_S
    assert resumed == pytest.approx(1.05)  # one frame period after the last frame before it
    assert clock.judging_s(1.0 + outage_s + 0.05) == pytest.approx(1.10)
    assert clock.stream_s(0.5) == pytest.approx(0.5)
    assert clock.stream_s(1.05) == pytest.approx(6.0)
    assert clock.stream_s(1.10) == pytest.approx(6.05)


def test_two_outages_add_up() -> None:
    clock = JudgingClock()
    clock.judging_s(0.0)
    clock.judging_s(0.05)
    clock.judging_s(3.05)  # a 3 s hole
    clock.judging_s(3.10)
    last = clock.judging_s(10.10)  # a 7 s hole
    assert last == pytest.approx(0.20)
    assert clock.stream_s(0.20) == pytest.approx(10.10)
    assert clock.stream_s(0.12) == pytest.approx(3.07)
