"""Logs are one JSON object a line, carrying the `extra=` fields."""

from __future__ import annotations

import json
import logging

import pytest

from herald_shared.logs import JsonFormatter, RepeatLimit, configure_logging


def test_log_record_becomes_one_json_line_with_extras() -> None:
    record = logging.makeLogRecord({"name": "herald.test", "levelname": "WARNING", "msg": "dead-lettered %s",
                                    "args": ("x",), "topic": "herald.delivery", "offset": 7})
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["msg"] == "dead-lettered x"
    assert entry["level"] == "warning" and entry["logger"] == "herald.test"
    assert entry["topic"] == "herald.delivery" and entry["offset"] == 7
    assert entry["ts"].endswith("+00:00")


def test_the_inbound_smtp_servers_session_log_names_no_address_at_info() -> None:
    """aiosmtpd logs every command of a session at INFO ("MAIL FROM:<zoe@example.org>"): a subscriber's address
    in logs no erasure reaches (PRODUCT.md, "Data protection")."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("mail.log",)}
    try:
        configure_logging("INFO")
        assert not logging.getLogger("mail.log").isEnabledFor(logging.INFO)
        assert logging.getLogger("mail.log").isEnabledFor(logging.WARNING)
        assert logging.getLogger("herald_delivery.inbound").isEnabledFor(logging.INFO)  # Herald's own lines stay
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def aiokafka_record(created: float, msg: str = "Unable connect to node with id %s: %s", node: int = 1,
                    name: str = "aiokafka.conn") -> logging.LogRecord:
    return logging.makeLogRecord({"name": name, "levelno": logging.ERROR, "levelname": "ERROR", "msg": msg,
                                  "args": (node, "[Errno 111] Connect call failed"), "created": created})


def test_a_thousand_identical_aiokafka_errors_write_one_line_and_the_rest_are_counted_later(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A broker outage: aiokafka logs each reconnect at ERROR (review R6: ~880 lines a second from 5 processes)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("aiokafka").level
    try:
        configure_logging("INFO")
        conn = logging.getLogger("aiokafka.conn")
        for attempt in range(1_000):
            conn.error("Unable connect to node with id %s: %s", attempt % 3, "[Errno 111] Connect call failed")
        logging.getLogger("herald_shared.kafka").error("Herald's own line")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("aiokafka").setLevel(saved[2])
    assert [entry["logger"] for entry in lines] == ["aiokafka.conn", "herald_shared.kafka"]
    assert lines[0]["msg"] == "Unable connect to node with id 0: [Errno 111] Connect call failed"
    assert "suppressed" not in lines[0]


def test_a_repeated_aiokafka_error_passes_once_per_interval_with_the_count_it_stood_for() -> None:
    limit = RepeatLimit(interval=30.0)
    passed = [record for second in range(0, 100) for _ in range(10)
              if limit.filter(record := aiokafka_record(created=1_000.0 + second))]
    assert [record.created - 1_000.0 for record in passed] == [0, 30, 60, 90]
    assert [getattr(record, "suppressed", 0) for record in passed] == [0, 299, 299, 299]
    assert json.loads(JsonFormatter().format(passed[1]))["suppressed"] == 299


def test_distinct_aiokafka_errors_each_pass_and_other_loggers_are_never_limited() -> None:
    limit = RepeatLimit(interval=30.0)
    kinds = [aiokafka_record(0.0), aiokafka_record(0.1, msg="Unable to update metadata from %r: %s"),
             aiokafka_record(0.2, name="aiokafka.consumer.fetcher"), aiokafka_record(0.3, name="aiokafka")]
    assert all(limit.filter(record) for record in kinds)
    assert not any(limit.filter(aiokafka_record(1.0 + i / 10, msg=r.msg, name=r.name)) for i, r in enumerate(kinds))
    herald = [logging.makeLogRecord({"name": "herald_delivery.sender", "levelno": logging.ERROR, "msg": "failed",
                                     "created": 2.0}) for _ in range(50)]
    assert all(limit.filter(record) for record in herald)


def test_the_kinds_remembered_stay_bounded_when_every_message_is_formatted_before_logging() -> None:
    limit = RepeatLimit(interval=30.0)
    for i in range(5 * RepeatLimit.MAX_KINDS):
        assert limit.filter(aiokafka_record(created=i / 100, msg=f"Unexpected error on node {i}"))
    assert len(limit._kinds) <= RepeatLimit.MAX_KINDS


def test_uvicorns_colour_copy_of_a_message_is_not_carried_into_the_json_line() -> None:
    """uvicorn logs each line with `extra={"color_message": ...}`: the same text with ANSI escapes, for a terminal."""
    record = logging.makeLogRecord({"name": "uvicorn.error", "levelname": "INFO", "msg": "Started server process [%d]",
                                    "args": (42,), "color_message": "Started server process [\x1b[36m%d\x1b[0m]"})
    line = JsonFormatter().format(record)
    assert "\\u001b" not in line and "color_message" not in line
    assert json.loads(line)["msg"] == "Started server process [42]"


def test_faust_and_mode_say_only_warnings_and_herald_keeps_its_info_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Compliance's start and stop wrote ~70 INFO lines of faust's and mode's ("[^--Conductor]: Starting...",
    "Timer commit woke up too late"), some under Herald's own module name: mode logs a service under the module
    of its class, and compliance's subclasses of faust's consumer and stores live in herald_compliance."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {name: logging.getLogger(name).level for name in ("faust", "mode")}
    try:
        configure_logging("INFO")
        logging.getLogger("faust.transport.conductor").info("[^--Conductor]: Waiting for agents to start...")
        logging.getLogger("mode.timers").info("Timer %s woke up too late, with a drift of +%r", "commit", 1.07)
        logging.getLogger("herald_compliance.faust_adapter").info("[^-Consumer]: Starting...")
        logging.getLogger("herald_compliance.faust_adapter").error(
            "[^--ConsumerThread]: Thread keepalive is not responding...")
        logging.getLogger("faust.tables.recovery").warning("[^--Recovery]: No progress in 60 s")
        logging.getLogger("herald_shared.lifecycle").info("service started")
        logging.getLogger("herald_compliance.processor").info("[not mode's] a line of Herald's own")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
    assert [(entry["logger"], entry["msg"]) for entry in lines] == [
        ("herald_compliance.faust_adapter", "[^--ConsumerThread]: Thread keepalive is not responding..."),
        ("faust.tables.recovery", "[^--Recovery]: No progress in 60 s"),
        ("herald_shared.lifecycle", "service started"),
        ("herald_compliance.processor", "[not mode's] a line of Herald's own")]
