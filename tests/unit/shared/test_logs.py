"""Logs are one JSON object a line, carrying the `extra=` fields."""

from __future__ import annotations

import json
import logging

from herald_shared.logs import JsonFormatter


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
    from herald_shared.logs import configure_logging

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
