"""Failed attempts counted per key (a username, a client address, a key prefix) in a sliding window: after
`limit` failures within `window` the key is refused until the oldest of them leaves the window. Pure (time is
given) and bounded: at most `max_keys` keys are remembered, the least recently failed forgotten first.

It lives in one process: with several replicas behind a balancer, an attacker gets at most `limit` tries per
window on each of them."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta


class Throttle:
    def __init__(self, limit: int, window: timedelta, max_keys: int = 100_000) -> None:
        if limit < 1 or window <= timedelta(0) or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: OrderedDict[str, list[datetime]] = OrderedDict()

    def retry_after(self, key: str, now: datetime) -> float:
        """Seconds until the key may try again (0: it may now)."""
        recent = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, (recent[-self.limit] + self.window - now).total_seconds())

    def failed(self, key: str, now: datetime) -> None:
        recent = [t for t in self._failures.pop(key, ()) if now - t < self.window]
        recent.append(now)
        self._failures[key] = recent[-self.limit:]  # older ones can no longer decide anything
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)
