"""The limits every service's HTTP server puts on one connection and one client address (herald_shared.serving),
as pure rules: the clocks of a request's head and body, the connection caps, and the log of accept() out of
descriptors."""

from __future__ import annotations

import asyncio
import errno
import logging

import pytest

from herald_shared.serving import (
    RESERVED_DESCRIPTORS,
    ConnectionCaps,
    Phase,
    RequestClock,
    ServerLimits,
    TrustedProxies,
    accept_errors_logged_once,
    connections_allowed,
)

LIMITS = ServerLimits(head_timeout=10, body_timeout=30, body_min_rate=1000, max_connections=6,
                      max_connections_per_client=2)


def _clock(phase: Phase) -> RequestClock:
    clock = RequestClock.of(LIMITS, now=0.0)
    clock.enter(phase, now=0.0)
    return clock


def _readings(clock: RequestClock, *times: float, reading: bool = True) -> list[str | None]:
    return [clock.tick(at, reading=reading) for at in times]


def test_a_head_not_complete_within_its_deadline_is_overdue() -> None:
    clock = _clock("head")
    clock.got(20, now=4.0)  # half a head
    assert _readings(clock, 9.9, 10.0) == [None, "head"]


def test_a_body_trickling_below_the_minimum_rate_is_cut_past_its_base_deadline() -> None:
    """1 byte every 5 s (the review's trickle): 30 s plus 1 s per 1,000 bytes received is soon past."""
    clock = _clock("body")
    overdue, at = None, 0.0
    while overdue is None and at < 60:
        at += 1
        if at % 5 == 0:
            clock.got(1, now=at)
        overdue = clock.tick(at, reading=True)
    assert overdue == "body" and at == 31  # 30 s plus 6 bytes' worth


def test_a_body_at_the_minimum_rate_or_above_is_never_cut() -> None:
    clock = _clock("body")
    for second in range(1, 3600):
        clock.got(1000, now=float(second))
        assert clock.tick(float(second), reading=True) is None


def test_a_body_that_stops_arriving_is_cut_after_a_pause_however_much_came_before() -> None:
    clock = _clock("body")
    clock.got(100_000_000, now=1.0)  # credit for hours at the minimum rate
    assert _readings(clock, 30.9, 31.0) == [None, "body"]


def test_time_the_server_holds_the_body_back_is_not_the_clients() -> None:
    """The service reads slower than the client sends (uvicorn pauses reading): that time does not count."""
    clock = _clock("body")
    assert _readings(clock, 10.0) + _readings(clock, 500.0, reading=False) + _readings(clock, 519.0, 520.0) == [
        None, None, None, "body"]


def test_while_the_service_answers_nothing_is_overdue_and_the_next_head_has_its_own_deadline() -> None:
    clock = _clock("app")
    assert _readings(clock, 3600.0) == [None]
    clock.enter("head", now=3600.0)
    assert _readings(clock, 3609.0, 3610.0) == [None, "head"]


def test_one_address_holds_its_share_and_all_together_the_overall_cap() -> None:
    caps = ConnectionCaps(LIMITS, TrustedProxies("10.0.0.1"), max_connections=LIMITS.max_connections)
    assert [caps.admit("192.0.2.7") for _ in range(3)] == [None, None, "too_many_from_client"]
    caps.release("192.0.2.7")
    assert caps.admit("192.0.2.7") is None
    # The trusted proxy carries many clients: only the overall cap holds it.
    assert [caps.admit("10.0.0.1") for _ in range(5)] == [None, None, None, None, "too_many_connections"]
    assert caps.admit("198.51.100.1") == "too_many_connections"
    caps.release("10.0.0.1")
    assert caps.admit("198.51.100.1") is None
    assert caps.total == LIMITS.max_connections


def test_trusted_proxies_are_addresses_networks_or_everyone() -> None:
    trusted = TrustedProxies("127.0.0.1, 10.0.0.0/8,fd00::/8")
    assert "127.0.0.1" in trusted and "10.1.2.3" in trusted and "fd00::1" in trusted
    assert "127.0.0.2" not in trusted and "192.0.2.1" not in trusted and "not-an-address" not in trusted
    assert "192.0.2.1" in TrustedProxies("*")


def test_the_connection_cap_leaves_descriptors_for_the_rest_of_the_process() -> None:
    assert connections_allowed(1000, 1_048_576) == 1000
    assert connections_allowed(1000, 1024) == 1024 - RESERVED_DESCRIPTORS
    assert connections_allowed(1000, 100) == 8  # a tiny limit still serves the probes


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_HTTP_HEAD_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT", "0")
    with pytest.raises(SystemExit, match="HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT"):
        ServerLimits.from_environment()
    monkeypatch.setenv("HERALD_HTTP_MAX_CONNECTIONS_PER_CLIENT", "20")
    limits = ServerLimits.from_environment()
    assert (limits.head_timeout, limits.max_connections_per_client, limits.body_timeout) == (5, 20, 30)


def test_accept_out_of_descriptors_is_one_line_per_interval_and_other_errors_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """The review counted 32,763 ERROR tracebacks of "Too many open files" from one flood."""
    others: list[dict[str, object]] = []
    handle = accept_errors_logged_once(lambda _loop, context: others.append(context))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.INFO, logger="herald_shared.serving"):
            for _ in range(5000):
                handle(loop, {"message": "socket.accept() out of system resource",
                              "exception": OSError(errno.EMFILE, "Too many open files")})
            handle(loop, {"message": "Task exception was never retrieved", "exception": RuntimeError("x")})
    finally:
        loop.close()
    lines = [r for r in caplog.records if r.name == "herald_shared.serving"]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and lines[0].exc_info is None
    assert [context["message"] for context in others] == ["Task exception was never retrieved"]
