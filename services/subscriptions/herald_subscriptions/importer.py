"""CSV import of consented subscribers, row by row with bounded memory.

The upload is spooled to a temporary file as it arrives, then read with the csv module one row at a
time and decided in batches (one MongoDB lookup per batch). Every row needs its consent evidence
(`consent_method`, `consent_at`); a row without it, with a bad address, a suppressed or unsubscribed
address, or a duplicate is rejected with its line number and reason. Memory: the batch, plus 8-16
bytes per distinct address seen (to find duplicates within the file; see SeenAddresses).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import secrets
import tempfile
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from typing import IO, Any

from pydantic import ValidationError

from herald_shared.contract import Event
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    FieldValue,
    ImportCompleted,
    ImportCompletedPayload,
)

from . import domain, metrics
from .domain import ListState, SubscribeRequest, SubscriptionError
from .handlers import SubscriptionsService

# Rows decided together: one read of their members, suppressions and confirmations, one publish. 3,000 against
# 1,000: 200,000 rows visible at 4,596-4,748 rows/s against 4,208-4,344 (2026-12-05, bench.import_visible);
# 5,000 gained nothing more (4,592) and held more memory (+72 MB against +58 at the peak). At 1,000,000 rows
# the gain is ~1% (the same stack: 3,999 -> 4,052 rows/s).
BATCH = 3000
MAX_REPORTED_REJECTIONS = 1000
REQUIRED_COLUMNS = ("email", "consent_method", "consent_at")
PROFILE_COLUMNS = ("first_name", "last_name", "phone", "consent_ip")
# What decoding with errors="surrogateescape" makes of a byte that is not UTF-8 (valid UTF-8 never gives these).
NOT_UTF8 = re.compile("[\udc80-\udcff]")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A number as a spreadsheet writes one: an optional sign, digits, at most one decimal separator ('.' or ',').
NUMBER = re.compile(r"[+-]?([0-9]+([.,][0-9]*)?|[.,][0-9]+)")
# One to three digits, a separator, three digits: "1,000" and "1.000" mean one thousand as often as one.
THOUSANDS = re.compile(r"[+-]?[1-9][0-9]{0,2}[.,][0-9]{3}")


class SeenAddresses:
    """The addresses seen so far in a file, as 64-bit fingerprints in one flat array (open addressing):
    8-16 bytes an address, where a Python set of digests costs ~90. Two different addresses share a
    fingerprint with probability ~n^2/2^65 (about 3e-8 for a million rows); the later one would be
    reported as a duplicate."""

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def add(self, address: str) -> bool:
        """True if the address is new; False if it was seen before."""
        fingerprint = int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "big") or 1
        slots, mask = self._slots, self._mask
        index = fingerprint & mask
        while (stored := slots[index]) != 0:
            if stored == fingerprint:
                return False
            index = (index + 1) & mask
        slots[index] = fingerprint
        self._count += 1
        if self._count * 2 > mask:
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        for fingerprint in old:
            if fingerprint:
                index = fingerprint & self._mask
                while self._slots[index] != 0:
                    index = (index + 1) & self._mask
                self._slots[index] = fingerprint


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'][-1:])}: {first['msg']}"


class ImportRefused(SubscriptionError):
    """The file cannot be read at all: its first line is not UTF-8, or its header is wrong. A problem further
    down is a rejected row instead (see `_rows`)."""

    code = "import_refused"


@dataclass(frozen=True)
class Unreadable:
    """A row the file does not give as values: the rejection's reason and detail."""

    reason: str
    detail: str


@dataclass
class Rejection:
    line: int
    reason: str
    detail: str


@dataclass
class ImportReport:
    import_id: str
    rows_total: int = 0
    rows_imported: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, line: int, reason: str, detail: str) -> None:
        self.rejected_by_reason[reason] += 1
        if len(self.rejections) < MAX_REPORTED_REJECTIONS:
            self.rejections.append(Rejection(line, reason, detail))

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def as_json(self) -> dict[str, Any]:
        return {"import_id": self.import_id, "rows_total": self.rows_total, "rows_imported": self.rows_imported,
                "rows_rejected": self.rows_rejected, "rejected_by_reason": dict(self.rejected_by_reason),
                "rejections": [r.__dict__ for r in sorted(self.rejections, key=lambda r: r.line)],  # decided apart
                "rejections_truncated": self.rows_rejected > len(self.rejections)}


async def spool(chunks: AsyncIterator[bytes]) -> IO[bytes]:
    """Write the upload to a temporary file as it arrives; memory stays at one chunk."""
    spooled = tempfile.TemporaryFile()
    async for chunk in chunks:
        spooled.write(chunk)
    spooled.seek(0)
    return spooled


class _Lines:
    """The file's lines as the csv reader takes them: counted, and the lines of the row being read kept (one,
    but for a quoted value running over lines), so a rejected row names the lines it took."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text
        self.read = 1  # the header is line 1
        self.row: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = next(self._text)
        self.read += 1
        self.row.append(line)
        return line

    @property
    def row_start(self) -> int:
        return self.read - len(self.row) + 1

    def skip_open_value(self, delimiter: str) -> None:
        """The csv reader gave up on the row (a field over its limit) and goes on at the next line; when that
        line is inside a quoted value, the lines up to the value's closing quote are still the row's, and must
        not be read as rows of their own."""
        quoted = False
        for line in self.row:
            quoted = _quote_open_after(line, quoted, delimiter)
        while quoted and (line := self._text.readline()):
            self.read += 1
            quoted = _quote_open_after(line, quoted, delimiter)


def _quote_open_after(line: str, quoted: bool, delimiter: str) -> bool:
    """Whether a quoted value is still open at the end of `line`, given whether one was at its start, read as
    the csv module reads: a field that starts with a quote runs to the next quote that is not doubled, a quote
    elsewhere is a character."""
    at = 0
    while True:
        if quoted:
            close = line.find('"', at)
            if close < 0:
                return True
            if line.startswith('"', close + 1):  # a doubled quote, inside the value
                at = close + 2
                continue
            quoted, at = False, close + 1
        elif line.startswith('"', at):
            quoted, at = True, at + 1
            continue
        at = line.find(delimiter, at) + 1  # the next field's start
        if at == 0:
            return False


def _rows(raw: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, list[str] | Unreadable]]]:
    """(header, iterator of (the line a row starts on, its values, or why they cannot be read)); UTF-8 with or
    without BOM, ';' or ',' separated. Bytes that are not UTF-8 reject the row they are in (decoded as
    surrogates, so the rows around them are read as usual)."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    first = text.readline()
    if bad := NOT_UTF8.search(first):
        raise ImportRefused(f"the file is not UTF-8: byte {_byte(bad[0])} in the header (line 1)")
    delimiter = ";" if first.count(";") > first.count(",") else ","
    try:
        header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delimiter), [])]
    except csv.Error as exc:  # e.g. a name over the csv module's field limit
        raise ImportRefused(f"the header (line 1) is not valid CSV: {exc}") from None
    lines = _Lines(text)
    reader = csv.reader(lines, delimiter=delimiter)
    # A quoted value may run over lines in a custom text field, never in these: one that does has taken in
    # the rows after it (a quote left open), which would otherwise vanish into it.
    single_line = [i for i, name in enumerate(header) if name in REQUIRED_COLUMNS + PROFILE_COLUMNS]

    def rows() -> Iterator[tuple[int, list[str] | Unreadable]]:
        while True:
            lines.row = []
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over the csv module's limit
                start = lines.row_start
                lines.skip_open_value(delimiter)
                taken = f"; lines {start}-{lines.read} were read as one row, none of them imported" \
                    if lines.read > start else ""
                yield start, Unreadable("invalid_csv", f"not valid CSV: {exc}{taken}")
                continue
            start, end = lines.row_start, lines.read
            broken = [header[i] for i in single_line if i < len(values) and ("\n" in values[i] or "\r" in values[i])]
            if bad := next((found for line in lines.row if (found := NOT_UTF8.search(line))), None):
                within = f"line {start}" if end == start else f"lines {start}-{end}"
                yield start, Unreadable("not_utf8", f"{within}: byte {_byte(bad[0])} is not UTF-8 (a file saved "
                                                    "in another encoding?); not imported")
            elif end > start and broken:
                yield start, Unreadable("multiline_row", f"lines {start}-{end} were read as one row: its "
                                                         f"{broken[0]} runs over several lines (a quote left "
                                                         "open?); none of them was imported")
            elif end > start and (row_inside := _row_inside(header, values, delimiter)) is not None:
                name, offset = row_inside
                yield start, Unreadable("multiline_row", f"lines {start}-{end} were read as one row: its {name} "
                                                         f"runs over several lines, and line {start + offset} "
                                                         "in it reads as a row of its own (a quote left open?); "
                                                         "none of them was imported")
            elif any(v.strip() for v in values):
                yield start, [v.strip() for v in values]
            elif len(values) > 1:  # separators and nothing else: a row that lost its values, not a blank line
                yield start, Unreadable("empty_row", f"line {start} has {len(values)} cells, all empty; not imported")

    return header, rows()


def _byte(escaped: str) -> str:
    return f"0x{ord(escaped) - 0xDC00:02x}"


def _row_inside(header: list[str], values: list[str], delimiter: str) -> tuple[str, int] | None:
    """A value running over lines, one of whose lines reads as a row with an address in the email column:
    (the value's column, that line's offset from the row's first line), else None."""
    if "email" not in header:
        return None
    email_column, offset = header.index("email"), 0
    for column, value in enumerate(values):
        inner = LINE_BREAK.split(value)
        for number, line in enumerate(inner[1:], 1):
            try:
                cells = next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:
                continue
            if email_column < len(cells):
                try:
                    domain.normalise_email(cells[email_column])
                except domain.InvalidEmail:
                    continue
                return (header[column] if column < len(header) else "value"), offset + number
        offset += len(inner) - 1
    return None


def _check_header(header: list[str], lst: ListState) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportRefused(f"missing column(s): {', '.join(missing)}; every row needs its consent evidence")
    named = [c for c in header if c]  # columns without a name (spreadsheets add them) must stay empty
    unknown = [c for c in named if c not in REQUIRED_COLUMNS + PROFILE_COLUMNS and c not in lst.custom_fields]
    if unknown:
        raise ImportRefused(f"unknown column(s): {', '.join(unknown)} (not custom fields of the list)")
    if len(set(named)) != len(named):
        raise ImportRefused("a column appears twice in the header")


def _field_value(kind: str, raw: str) -> FieldValue:
    if raw == "":
        return None
    if kind == "number":
        if not NUMBER.fullmatch(raw):
            raise ValueError(f"{raw!r} is not a number: an optional sign, digits and at most one decimal "
                             "separator ('.' or ','), without thousands separators")
        if THOUSANDS.fullmatch(raw):
            raise ValueError(f"{raw!r} is ambiguous: a thousands separator or a decimal one? Write thousands "
                             "without a separator, a decimal with other than three decimal places")
        return int(raw) if raw.lstrip("+-").isdigit() else float(raw.replace(",", "."))
    if kind == "boolean":
        lowered = raw.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise ValueError(f"{raw!r} is not a yes/no value")
    return raw


DATE_ONLY_MARK = "(consent date only, time unknown)"


def _date_only(consent_at: str) -> bool:
    try:
        date.fromisoformat(consent_at)
    except ValueError:
        return False
    return True


def _parse_row(header: list[str], values: list[str], lst: ListState) -> SubscribeRequest:
    if len(values) > len(header):
        raise domain.InvalidCustomField("the row has more values than the header has columns")
    if any(value for name, value in zip(header, values, strict=False) if not name):
        raise domain.InvalidCustomField("a value under a column that has no name in the header")
    row = dict(zip(header, values, strict=False))
    consent_at = (row.get("consent_at") or "").strip()
    method = (row.get("consent_method") or "").strip()
    if not method or not consent_at:
        raise domain.ConsentMissing("consent_method and consent_at are required")
    domain.check_consent_method(method)  # before the mark below, which a placeholder must not hide behind
    try:
        collected = datetime.fromisoformat(consent_at)
    except ValueError:  # given, but not a time anyone can read: evidence that is not valid, not missing
        raise domain.InvalidConsent(f"consent_at {consent_at[:100]!r} is not an ISO 8601 time "
                                    "(e.g. 2026-11-01T10:00:00Z)") from None
    if collected.tzinfo is None:
        collected = collected.replace(tzinfo=UTC)
    if _date_only(consent_at):
        # Weaker evidence than a time, yet what many CRMs export: taken as the day's start in UTC, and the
        # evidence says so wherever it is shown (the GDPR export, the member's consent).
        method = f"{method} {DATE_ONLY_MARK}"
    fields: dict[str, FieldValue] = {}
    for name, kind in lst.custom_fields.items():
        if name in row:
            try:
                fields[name] = _field_value(kind, row[name])
            except ValueError as exc:
                raise domain.InvalidCustomField(f"custom field {name!r}: {exc}") from None
    consent = domain.consent_evidence(source="import", collected_at=collected, method=method,
                              ip=row.get("consent_ip") or None)
    return SubscribeRequest(email=domain.normalise_email(row.get("email", "")), consent=consent, channel="import",
                            first_name=row.get("first_name") or None, last_name=row.get("last_name") or None,
                            phone=row.get("phone") or None, custom_fields=fields)


async def run_import(service: SubscriptionsService, account_id: str, list_id: str, raw: IO[bytes]) -> ImportReport:
    lst = await service.store.list_state(account_id, list_id)
    if lst is None or not domain.takes_members(lst):
        raise domain.ListNotFound("no such list")
    started = datetime.now(UTC)
    header, rows = _rows(raw)
    _check_header(header, lst)
    report = ImportReport(import_id="imp" + secrets.token_hex(6))
    seen = SeenAddresses()
    company = await service.store.company_name(account_id) or lst.name
    batch: list[tuple[int, SubscribeRequest]] = []
    for line, values in rows:
        report.rows_total += 1
        if isinstance(values, Unreadable):
            report.reject(line, values.reason, values.detail)
            continue
        try:
            request = _parse_row(header, values, lst)
            domain.check_custom_fields(lst, request.custom_fields)
        except SubscriptionError as exc:
            report.reject(line, exc.code, exc.detail)
            continue
        except ValidationError as exc:
            report.reject(line, "invalid_value", _first_problem(exc))
            continue
        batch.append((line, request))
        if len(batch) >= BATCH:
            await _decide_batch(service, lst, company, batch, report, seen)
            batch = []
    if batch:
        await _decide_batch(service, lst, company, batch, report, seen)
    completed = ImportCompletedPayload(
        import_id=report.import_id, list_id=list_id, rows_total=report.rows_total, rows_imported=report.rows_imported,
        rows_rejected=report.rows_rejected, rejected_by_reason=dict(report.rejected_by_reason), started_at=started)
    # Recorded, not yet necessarily visible: a large import is folded into the read model after the answer
    # (keyed by account, all its events sit in one partition, in order; ImportCompleted comes last).
    await service.publish_only([ImportCompleted(account_id=account_id, producer=domain.PRODUCER, payload=completed)])
    return report


async def _decide_batch(service: SubscriptionsService, lst: ListState, company: str,
                        batch: list[tuple[int, SubscribeRequest]], report: ImportReport,
                        seen: SeenAddresses) -> None:
    """Each row decided in file order; a row whose address an earlier row of the file already took is a
    duplicate. An address counts as taken once a row of it was decided, not when one was read: a row refused
    for itself (a value too long, consent in the future) leaves its address to a later, valid row. The list is
    read again first (by `_id`): deleted meanwhile (or its account), the batch's rows are rejected as
    `list_deleted`, not published to be dead-lettered by the projection while the report counted them imported."""
    now_list = await service.store.list_state(lst.account_id, lst.list_id)
    if now_list is None or not domain.takes_members(now_list):
        for line, _ in batch:
            report.reject(line, "list_deleted", "the list (or its account) was deleted during the import")
        return
    hashes = {req.email: domain.email_sha256(req.email) for _, req in batch}
    # Each address's membership of the list, under whichever id holds it (one membership per address and list).
    memberships = await service.store.memberships_of(lst.account_id, list(hashes.values()))
    ids = {email: domain.member_id_for(memberships.get(h, ()), lst.account_id, lst.list_id, email)
           for email, h in hashes.items()}
    members = {doc["subscriber_id"]: state for docs in memberships.values() for doc in docs
               if (state := service.store.member_state_of(doc)) is not None}
    suppressed = await service.store.suppressed(lst.account_id, list(hashes.values()))
    # The daily confirmation caps hold for imports too: the addresses' history, read once for the batch.
    history = {} if lst.opt_in == "single" and not suppressed else \
        await service.store.confirmations_to_addresses(lst.account_id, list(hashes.values()))
    recent, now = service.recent_confirmations, datetime.now(UTC)
    events: list[Event] = []
    for line, request in batch:
        subscriber_id, email_hash = ids[request.email], hashes[request.email]
        member = members.get(subscriber_id)
        try:
            address_suppressed = email_hash in suppressed
            sent = domain.ConfirmationsSent(member.confirmation_requested_at if member else None,
                                            recent.merged(lst.account_id, email_hash, history.get(email_hash, ()), now))
            decision = domain.subscribe(lst, member, address_suppressed, request, company,
                                        partial(service.confirm_link, lst.account_id, subscriber_id), sent, now)
        except SubscriptionError as exc:
            report.reject(line, exc.code, exc.detail)
            continue
        except ValidationError as exc:  # e.g. a first name of 300 characters
            report.reject(line, "invalid_value", _first_problem(exc))
            continue
        if not seen.add(request.email):
            report.reject(line, "duplicate", "the address appears earlier in the file")
            continue
        if decision.outcome in ("already_active", "already_pending"):
            report.reject(line, "already_subscribed", f"already on the list ({decision.outcome.split('_')[1]})")
            events += decision.events  # a confirmation email a publish cut off before it lost (`domain.subscribe`)
            continue
        if decision.confirmation_withheld:
            metrics.REFUSED.labels("confirmation_cap").inc()
        events += decision.events
        report.rows_imported += 1
    events, claims = await _claimed(service, lst.account_id, events, now)
    for event in events:
        if isinstance(event, ConfirmationRequested):
            recent.add(lst.account_id, domain.email_sha256(str(event.payload.email)), event.occurred_at)
    try:
        await service.publish_only(events)
    except Exception:
        await service.claims.release(claims)
        raise


async def _claimed(service: SubscriptionsService, account_id: str, events: list[Event],
                   now: datetime) -> tuple[list[Event], list[str]]:
    """The batch's events less the confirmation emails other processes claimed the day's share of first (the
    address, for the list or across the account's lists: `claims.py`), and the claims taken for the rest: one
    insert of the batch's lists' claims, then one per slot number (1 to 3) while an address still needs one. A row
    whose email is left out is imported all the same, pending, like one the caps withheld."""
    confirmations = [e for e in events if isinstance(e, ConfirmationRequested)]
    if not confirmations:
        return events, []
    granted = await service.claims.confirmations(
        account_id, [(e.payload.list_id, domain.email_sha256(str(e.payload.email))) for e in confirmations], now)
    refused = {id(e) for e, claim in zip(confirmations, granted, strict=True) if claim is None}
    if refused:
        metrics.REFUSED.labels("confirmation_cap").inc(len(refused))
    return [e for e in events if id(e) not in refused], [c for claim in granted if claim for c in claim]
