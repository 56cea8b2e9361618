"""Failed attempts counted per key (a username, a client address, a key prefix) in a sliding window: after
`limit` failures within `window` the key is refused until the oldest of them leaves the window. Pure (time is
given) and bounded: at most `max_keys` keys are remembered, the least recently failed forgotten first.

It lives in one process: with several replicas behind a balancer, an attacker gets at most `limit` tries per
window on each of them."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal


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

    def room(self, key: str, now: datetime) -> int:
        """How many more the key may count now before it is refused."""
        return max(0, self.limit - sum(1 for t in self._failures.get(key, ()) if now - t < self.window))

    def count(self, key: str, now: datetime, times: int = 1) -> None:
        """Count `times` more for the key (what `failed` counts: a throttle of anything, not only failures)."""
        for _ in range(times):
            self.failed(key, now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def __bool__(self) -> bool:
        return True  # a throttle that remembers nothing yet is still one (`throttle or default` keeps it)


# Failed API-key attempts (HERALD_AUTH_FAILURES_*). A real key's secret is 256 random bits, so the throttle is
# not what stops guessing; it bounds the scrypt work one client can make a service do (each failure costs tens
# of milliseconds of CPU) and the noise of a misconfigured client. An address may be shared (an office, a NAT),
# so it gets more tries and a shorter window; a key id belongs to one customer, whose own clients fail at most
# a few times before someone fixes them, so it gets the login throttle's figures (5 in 15 minutes).
API_KEY_FAILURES_PER_ADDRESS, API_KEY_ADDRESS_WINDOW = 20, timedelta(minutes=5)
API_KEY_FAILURES_PER_KEY, API_KEY_KEY_WINDOW = 5, timedelta(minutes=15)
# A key id longer than this is counted under its first characters (real ones have 16): what is remembered stays
# small whatever is sent.
PREFIX_REMEMBERED = 64

Reason = Literal["throttled_ip", "throttled_key"]


@dataclass(frozen=True)
class Refusal:
    """An attempt refused without being checked: why, and the whole seconds to wait (Retry-After, at least 1)."""

    reason: Reason
    retry_after: int


class CredentialAttempts:
    """Failed attempts at one kind of credential, throttled per client address and per credential prefix (an API
    key's id). Whether a refused prefix still lets a credential through is the caller's to decide (see
    `herald_shared.http.api_key_account`); this only counts and answers."""

    def __init__(self, per_address: Throttle, per_prefix: Throttle) -> None:
        self.per_address, self.per_prefix = per_address, per_prefix

    @classmethod
    def api_keys(cls, per_address: int = API_KEY_FAILURES_PER_ADDRESS,
                 address_window: timedelta = API_KEY_ADDRESS_WINDOW, per_key: int = API_KEY_FAILURES_PER_KEY,
                 key_window: timedelta = API_KEY_KEY_WINDOW) -> CredentialAttempts:
        return cls(Throttle(per_address, address_window), Throttle(per_key, key_window))

    def refusal(self, address: str | None, prefix: str | None, now: datetime) -> Refusal | None:
        """Why an attempt from `address` with `prefix` is refused now, if it is: the address first (everything
        from it is refused), then the prefix."""
        if address and (wait := self.per_address.retry_after(address, now)) > 0:
            return Refusal("throttled_ip", max(1, math.ceil(wait)))
        if prefix and (wait := self.per_prefix.retry_after(prefix[:PREFIX_REMEMBERED], now)) > 0:
            return Refusal("throttled_key", max(1, math.ceil(wait)))
        return None

    def failed(self, address: str | None, prefix: str | None, now: datetime) -> None:
        """An attempt that was checked and failed. A success clears nothing: the failures on a prefix may be
        someone else's guesses, and they leave the window on their own."""
        if address:
            self.per_address.failed(address, now)
        if prefix:
            self.per_prefix.failed(prefix[:PREFIX_REMEMBERED], now)

    def forget(self, prefix: str) -> None:
        """Forget the failures on a prefix (a key id that has just been issued: they were its owner's)."""
        self.per_prefix.succeeded(prefix[:PREFIX_REMEMBERED])
