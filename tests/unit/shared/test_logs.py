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
