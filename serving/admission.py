"""Admission control before any work: how many requests may be in progress at once.

Under overload the queue that matters is not the encoder's: requests wait in sockets, in the
event loop and in body parsing before the batcher can refuse them, and a request refused only
after it has waited its deadline out is work spent for nothing. So a request is admitted, or
refused at once, when it arrives: at most as many may be in progress as the server finishes in
a quarter of the deadline at its measured rate (plenty to keep batches full; the rest of the
deadline absorbs the variance and the waits it cannot see, before it is called), never fewer
than `MIN_IN_FLIGHT` (a few are let in even when one request alone takes longer than that; a
low floor, since on a slow machine it, not the rate, would set the latency) and never more than
`max_in_flight`. A refused request costs a few
microseconds and a short answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from baihua.serving.batcher import MAX_RETRY_AFTER_S

MIN_IN_FLIGHT = 4
QUEUE_SHARE_OF_DEADLINE = 0.25  # work admitted at most: this share of the deadline, at the rate
RATE_WINDOW_S = 0.5  # busy seconds per rate sample, at least
RATE_WINDOW_COMPLETIONS = 16  # completions per rate sample, at least: batches answer in bursts
RATE_SMOOTHING = 0.3  # weight of the newest sample in the moving average


class Overloaded(RuntimeError):
    """More requests are in progress than the server finishes within the deadline."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _RateWindow:
    busy_s: float = 0.0
    completed: int = 0


class AdmissionControl:
    """Count requests in progress; admit a new one only while the measured completion rate
    finishes them all within `QUEUE_SHARE_OF_DEADLINE` of `deadline_s`.

    The rate is requests completed per busy second (while at least one is in progress), a
    moving average over windows of at least `RATE_WINDOW_S` busy seconds and
    `RATE_WINDOW_COMPLETIONS` completions, so idle time does not lower it. Times are the
    caller's clock (`loop.time()`), in seconds.
    """

    def __init__(self, deadline_s: float, *, max_in_flight: int) -> None:
        self.deadline_s = deadline_s
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.completed_per_s: float | None = None
        self._window = _RateWindow()
        self._since = 0.0  # when the busy time was last added up

    def limit(self) -> int:
        """Requests that may be in progress at once now."""
        if self.completed_per_s is None:
            return self.max_in_flight
        budget = self.completed_per_s * self.deadline_s * QUEUE_SHARE_OF_DEADLINE
        return min(self.max_in_flight, max(MIN_IN_FLIGHT, round(budget)))

    def retry_after_s(self) -> int:
        """Seconds until what is in progress now is done at the measured rate (1 to 60)."""
        rate = self.completed_per_s
        seconds = self.in_flight / rate if rate else 1.0
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))

    def enter(self, now: float) -> None:
        """Admit one request, or raise `Overloaded` (nothing is counted then)."""
        limit = self.limit()
        if self.in_flight >= limit:
            raise Overloaded(
                f"the server has {self.in_flight} requests in progress, as many as it finishes "
                f"within a quarter of the {self.deadline_s:g} s deadline (request_timeout_s); "
                "retry later",
                self.retry_after_s(),
            )
        self._add_busy_time(now)
        self.in_flight += 1

    def leave(self, now: float, *, completed: bool) -> None:
        """One admitted request is done; `completed`: it did its work (counts toward the rate),
        rather than failing early."""
        self._add_busy_time(now)
        self.in_flight -= 1
        if completed:
            self._window.completed += 1
        window = self._window
        if window.busy_s >= RATE_WINDOW_S and window.completed >= RATE_WINDOW_COMPLETIONS:
            self._sample()

    def _add_busy_time(self, now: float) -> None:
        if self.in_flight > 0:
            self._window.busy_s += now - self._since
        self._since = now

    def _sample(self) -> None:
        rate = self._window.completed / self._window.busy_s
        previous = self.completed_per_s
        self.completed_per_s = (
            rate if previous is None else previous + RATE_SMOOTHING * (rate - previous)
        )
        self._window = _RateWindow()
