"""An answer its client does not read is cut (herald_shared.serving's send deadline), and what every service's HTTP
server refuses or cuts is counted: the send clock as a pure rule, the counting of accept() out of descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket

import pytest
from prometheus_client import REGISTRY

from herald_shared.serving import SendClock, ServerLimits, accept_errors_logged_once, send_queue_bytes


def test_an_answer_held_without_shrinking_for_the_send_deadline_is_overdue() -> None:
    clock = SendClock(timeout=30)
    assert [clock.tick(5_000_000, now) for now in (1.0, 20.0, 30.9, 31.0)] == [False, False, False, True]


def test_an_answer_that_shrinks_restarts_the_clock_and_one_sent_whole_stops_it() -> None:
    clock = SendClock(timeout=30)
    assert clock.tick(5_000_000, 0.0) is False
    assert clock.tick(4_999_000, 29.0) is False  # a little was read
    assert clock.tick(4_999_000, 58.9) is False and clock.tick(4_999_000, 59.0) is True
    clock = SendClock(timeout=30)
    assert clock.tick(5_000_000, 0.0) is False
    assert clock.tick(0, 29.0) is False  # all of it sent: nothing held, no clock
    assert clock.tick(70_000, 40.0) is False  # the next answer held from here
    assert clock.tick(70_000, 69.9) is False and clock.tick(70_000, 70.0) is True


def test_a_drain_the_transport_reports_counts_however_much_was_written_since() -> None:
    """The client took enough for the transport to resume writing, and the service wrote as much again before the
    next reading: what is held did not shrink between readings, yet the client read."""
    clock = SendClock(timeout=30)
    assert clock.tick(100_000, 0.0) is False
    clock.taken(25.0)
    assert clock.tick(150_000, 30.0) is False and clock.tick(150_000, 55.0) is True


def test_the_kernel_says_what_a_socket_holds_that_its_peer_has_not_taken() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the accepted socket's, a small window
    sender = socket.create_connection(listener.getsockname())
    reader, _ = listener.accept()
    sender.setblocking(False)
    try:
        assert send_queue_bytes(sender) == 0
        written = 0
        with contextlib.suppress(BlockingIOError):
            while True:  # until the socket's send buffer is full: the reader takes nothing
                written += sender.send(b"x" * 65536)
        held = send_queue_bytes(sender)
        assert 0 < held <= written
        reader.settimeout(5)
        taken = 0
        while taken < written // 2:
            taken += len(reader.recv(65536))
        assert send_queue_bytes(sender) < held  # what the reader took no longer counts
    finally:
        for sock in (reader, sender, listener):
            sock.close()
    assert send_queue_bytes(sender) == 0 and send_queue_bytes(None) == 0  # nothing to ask: nothing said


def test_the_send_deadline_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerLimits().send_timeout == 30
    monkeypatch.setenv("HERALD_HTTP_SEND_TIMEOUT_SECONDS", "7.5")
    assert ServerLimits.from_environment().send_timeout == 7.5
    monkeypatch.setenv("HERALD_HTTP_SEND_TIMEOUT_SECONDS", "0")
    with pytest.raises(SystemExit, match="HERALD_HTTP_SEND_TIMEOUT_SECONDS"):
        ServerLimits.from_environment()


def test_every_accept_out_of_descriptors_is_counted_though_it_is_logged_once_an_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # its line not logged here: the interval's first is test_serving's to see
    monkeypatch.setattr(logging.getLogger("herald_shared.serving"), "disabled", True)
    before = _refused("out_of_descriptors")
    handle = accept_errors_logged_once(lambda _loop, _context: None)
    out_of_descriptors = {"message": "socket.accept() out of system resource",
                          "exception": OSError(errno.EMFILE, "Too many open files")}
    other = {"message": "Task exception was never retrieved", "exception": RuntimeError("x")}
    loop = asyncio.new_event_loop()
    try:
        for context in [out_of_descriptors] * 500 + [other]:
            handle(loop, context)
    finally:
        loop.close()
    assert _refused("out_of_descriptors") - before == 500


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("herald_http_connections_refused_total", {"reason": reason}) or 0.0
