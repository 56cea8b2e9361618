"""JSON logs on stderr, one object a line, with any `extra=` fields carried along."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from .correlation import CorrelationFilter

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
# Extra attributes a library sets for its own console output, not for a JSON line: uvicorn's `color_message` is
# its message with ANSI colour escapes ("Started server process [\x1b[36m%d\x1b[0m]").
_NOT_CARRIED = {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and k not in _NOT_CARRIED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


QUIETED_LOGGERS = ("aiokafka", "pymongo", "mail.log", "faust", "mode")
# aiokafka logs every failed reconnect, metadata refresh and fetch at ERROR, so a broker outage wrote ~880 lines a
# second from 5 processes and buried Herald's own (review R6, finding 2). Its loggers are rate-limited instead of
# silenced: the first line of each kind still tells what went wrong.
RATE_LIMITED_LOGGERS = ("aiokafka",)
REPEAT_INTERVAL_SECONDS = 30.0


class RepeatLimit(logging.Filter):
    """Passes the first record of each kind (logger, level, message template) of the loggers under `prefixes`,
    then at most one per `interval` seconds of that kind, carrying `suppressed`: how many were dropped since the
    last one passed. Other loggers' records all pass. What is dropped after the last line of a kind is not
    reported: the line of its next occurrence counts it."""

    MAX_KINDS = 1_000  # templates are few; a message formatted before logging makes each one a kind of its own

    def __init__(self, prefixes: tuple[str, ...] = RATE_LIMITED_LOGGERS,
                 interval: float = REPEAT_INTERVAL_SECONDS) -> None:
        super().__init__()
        self.prefixes, self.interval = prefixes, interval
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}  # kind -> (last passed at, dropped since)
        self._lock = threading.Lock()  # a handler's filters run outside its lock; libraries log from threads too

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        with self._lock:
            passed_at, dropped = self._kinds.get(kind, (None, 0))
            if passed_at is not None and record.created - passed_at < self.interval:
                self._kinds[kind] = (passed_at, dropped + 1)
                return False
            if passed_at is None and len(self._kinds) >= self.MAX_KINDS:
                self._forget_before(record.created - self.interval)
            self._kinds[kind] = (record.created, 0)
        if dropped:
            record.suppressed = dropped
        return True

    def _forget_before(self, moment: float) -> None:
        """Forgets the kinds last passed before `moment` (their next record passes anyway), or all of them when
        every one is recent: the memory stays bounded and a flood's kinds come back at worst once more."""
        kept = {kind: state for kind, state in self._kinds.items() if state[0] >= moment}
        self._kinds = kept if len(kept) < self.MAX_KINDS else {}


class ModeServiceChatter(logging.Filter):
    """Drops the INFO (and DEBUG) lines mode's services log about themselves ("[^--Conductor]: Starting...",
    "[^-Consumer]: Stopping..."): about 45 a start and 25 a stop of compliance. Quieting the `faust` and `mode`
    loggers does not reach them all: a service logs under the module of its class, and compliance's subclasses of
    faust's consumer and stores live in `herald_compliance.faust_adapter`. mode prefixes each such message with
    the service's label, `[^`; its warnings and errors ("[^--ConsumerThread]: Thread keepalive is not
    responding...") pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not str(record.msg).startswith("[^")


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # On the handler: a logger's own filters never see what its children (aiokafka.conn, ...) log.
    handler.addFilter(RepeatLimit())
    handler.addFilter(ModeServiceChatter())
    handler.addFilter(CorrelationFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that say at INFO what Herald does not want in its logs: chatter (faust's and mode's: each part's
    # start and stop, recovery tables, timers that woke late; Herald logs its own "service started"), and in
    # aiosmtpd's "mail.log" every command of a session, the sender's address included (an unsubscribe by mail, a
    # bounce): logs are kept where no erasure reaches (PRODUCT.md, "Data protection").
    for noisy in QUIETED_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
