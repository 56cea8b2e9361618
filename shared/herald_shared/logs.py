"""JSON logs on stderr, one object a line, with any `extra=` fields carried along."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


QUIETED_LOGGERS = ("aiokafka", "pymongo", "mail.log")


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that say at INFO what Herald does not want in its logs: chatter, and in aiosmtpd's "mail.log"
    # every command of a session, the sender's address included (an unsubscribe by mail, a bounce): logs are kept
    # where no erasure reaches (PRODUCT.md, "Data protection").
    for noisy in QUIETED_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
