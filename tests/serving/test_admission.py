"""Admission control on explicit clocks: the limit follows the measured completion rate."""

from __future__ import annotations

import pytest

from baihua.serving.admission import MIN_IN_FLIGHT, AdmissionControl, Overloaded


def serve_at(control: AdmissionControl, per_s: float, n: int, start: float = 0.0) -> float:
    """Complete `n` requests one after another at `per_s`, from `start`; the time at the end."""
    now = start
    for _ in range(n):
        control.enter(now)
        now += 1 / per_s
        control.leave(now, completed=True)
    return now


def test_before_any_measurement_up_to_max_in_flight_are_admitted() -> None:
    control = AdmissionControl(4.0, max_in_flight=40)
    for _ in range(40):
        control.enter(0.0)
    with pytest.raises(Overloaded):
        control.enter(0.0)


def test_the_limit_is_what_the_measured_rate_finishes_in_a_quarter_of_the_deadline() -> None:
    control = AdmissionControl(8.0, max_in_flight=1000)
    serve_at(control, per_s=100, n=200)
    assert control.limit() == 200  # 100/s x 8 s x 1/4
    for _ in range(200):
        control.enter(10.0)
    with pytest.raises(Overloaded) as refused:
        control.enter(10.0)
    assert refused.value.retry_after_s in (2, 3)  # 200 in progress at 100/s, rounded up
    assert "200 requests in progress" in str(refused.value)


def test_idle_time_does_not_lower_the_rate() -> None:
    control = AdmissionControl(8.0, max_in_flight=1000)
    end = serve_at(control, per_s=100, n=200)
    serve_at(control, per_s=100, n=200, start=end + 3600)  # an hour without requests between
    assert control.limit() == 200


def test_a_slow_rate_still_admits_a_few_and_max_in_flight_caps_a_fast_one() -> None:
    slow = AdmissionControl(1.0, max_in_flight=1000)
    serve_at(slow, per_s=2, n=40)
    assert slow.limit() == MIN_IN_FLIGHT
    fast = AdmissionControl(60.0, max_in_flight=50)
    serve_at(fast, per_s=1000, n=2000)
    assert fast.limit() == 50


def test_requests_that_fail_early_do_not_count_toward_the_rate() -> None:
    control = AdmissionControl(8.0, max_in_flight=1000)
    now = serve_at(control, per_s=100, n=200)
    for _ in range(1000):  # fast 4xx answers: a second busy without a completion
        control.enter(now)
        now += 0.001
        control.leave(now, completed=False)
    serve_at(control, per_s=100, n=20, start=now)
    assert control.limit() < 200
