"""The inbound SMTP server (aiosmtpd): asynchronous bounces (RFC 3464 DSNs) and feedback-loop reports
(RFC 5965 ARF) become MessageBounced and ComplaintReceived events.

A report is tied to its message by the signed VERP return path it was sent to (`b+<message id>.<tag>@`),
or by the signed addresses and Message-ID of the original message it quotes. A mail that cannot be tied
to a message, or is neither a DSN nor an ARF report, goes to the dead-letter topic with the reason, byte
for byte. The reply to the remote MTA is 250 only once the events or the dead-letter entry are written;
while Kafka or MongoDB are away it is 451, so the sender keeps the mail and tries again.
"""

from __future__ import annotations

import asyncio
import email
import email.errors
import email.header
import email.message
import email.parser
import hashlib
import html
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, syntax
from flufl.bounce import all_failures

from herald_shared.contract import Event
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, UnsubscribeRequested
from herald_shared.kafka import TRANSIENT_ERRORS, EventPublisher, expect_dead_letters
from herald_shared.mongo import Document

from . import domain, metrics
from .domain import HERALD_DELIVERY_NAMESPACE, BounceClass
from .render import MessageTokens
from .store import DeliveryStore

log = logging.getLogger(__name__)
PRODUCER = "delivery"
MAX_INBOUND_BYTES = 900_000  # below Kafka's default message size, so a dead-letter entry always fits
# The largest mail taken at all; only its first MAX_INBOUND_BYTES are kept, read and dead-lettered (a report's
# head: its explanation and status part come before the original it returns). Exchange and Gmail return the
# whole original, and a campaign message may be 1 MiB of body before the encoding of the report wraps it again:
# 10 MB takes any report of a message of ours with room for a forwarder's wrapping, while memory stays bounded
# by what is kept (HERALD_INBOUND_MAX_SESSIONS x MAX_INBOUND_BYTES), not by this. A larger mail is answered 552,
# counted (`too_large`) and logged with its envelope: it is no report of a message Herald sent.
MAX_INBOUND_ACCEPTED_BYTES = 10_000_000
# A report names one return path; a few more recipients are tolerated (forwarders), never a mailing list's worth.
MAX_INBOUND_RECIPIENTS = 10
SIGNED_MESSAGE_ID = re.compile(r"<([0-9a-fA-F-]{36}\.[a-z2-7]{16})@", re.IGNORECASE)
TAGGED = re.compile(r"\b([bu]\+[0-9a-fA-F-]{36}\.[a-z2-7]{16})@", re.IGNORECASE)
FEEDBACK_TYPES = {"abuse", "fraud", "virus", "not-spam", "other"}
# Commands a session may send (aiosmtpd answers 421 and closes it after that): a session that only keeps
# itself open (NOOP, HELP, VRFY) holds one of the limited sessions; one delivering reports may send many.
COMMAND_LIMITS = {"NOOP": 20, "HELP": 5, "VRFY": 5, "EXPN": 5, "*": 100_000}


class NotTied(Exception):
    """The mail cannot be tied to a message of ours, or is not a report; the reason goes to the DLQ."""


class NotABounce(Exception):
    """A mail to a return path that reports nothing: an automatic reply (RFC 3834). Counted, not recorded."""


@dataclass(frozen=True)
class Finding:
    """One failure or complaint a report states about one of our messages."""

    kind: str  # "bounce" | "complaint"
    bounce_class: BounceClass | None = None
    status: str | None = None
    smtp_code: int | None = None
    diagnostic: str = ""
    reporting: str | None = None
    feedback_type: str | None = None
    arrival_date: datetime | None = None


class ReportReader:
    """Pure: what a DSN or ARF report says, and which message ids it names."""

    def __init__(self, tokens: MessageTokens, bounce_domain: str) -> None:
        self.tokens = tokens
        self._bounce_domain = bounce_domain.lower()

    def message_ids(self, recipients: list[str], msg: email.message.Message) -> list[str]:
        """Signed ids from the envelope recipients first, then from the signed return path or mailto
        unsubscribe address in the quoted original message."""
        ids: list[str] = []
        for rcpt in recipients:
            local = rcpt.rpartition("@")[0]
            found = self.tokens.message_from_local_part(local, "b")
            if found and found not in ids:
                ids.append(found)
        if ids:
            return ids
        # The quoted original (its headers, or the whole report when it quotes the message inline): its
        # return path, its mailto unsubscribe address or its Message-ID, all three signed. An unsigned id
        # ties nothing: message ids are deterministic, so a forged report could otherwise name any message.
        quoted = _original_headers(msg)
        if quoted is None:
            quoted = _explanation(msg, cut_original=False)
        for match in TAGGED.finditer(quoted):
            local = match.group(1)
            found = self.tokens.message_from_local_part(local, local[0].lower())
            if found and found not in ids:
                ids.append(found)
        for match in SIGNED_MESSAGE_ID.finditer(quoted):
            found = self.tokens.message_from_signed_id(match.group(1))
            if found and found not in ids:
                ids.append(found)
        return ids

    def findings(self, msg: email.message.Message) -> list[Finding]:
        """What a report tied to one of our messages says, at most one finding per bounce class. A bounce
        nothing classifies is `undetermined`, never refused for its format."""
        report_type = (msg.get_param("report-type") or "") if msg.get_content_type() == "multipart/report" else ""
        report_type = str(report_type).lower()
        if report_type == "feedback-report":
            return [_arf_finding(msg)]
        found = _dsn_findings(msg) if report_type == "delivery-status" else []
        if not found:
            found = [_other_bounce(msg)]
        by_class: dict[str | None, Finding] = {}
        for finding in found:
            by_class.setdefault(finding.bounce_class, finding)
        return list(by_class.values())


MAX_MIME_DEPTH = 20  # parts nested deeper than this are not read (real reports nest 3 or 4 deep)


def _walk(msg: email.message.Message) -> list[email.message.Message]:
    """The message and its parts, depth first, to MAX_MIME_DEPTH levels (email's own walk recurses without
    a bound: a few thousand nested multiparts, an easy 200 KB, raise RecursionError)."""
    found: list[email.message.Message] = []
    todo = [(msg, 0)]
    while todo:
        part, depth = todo.pop()
        found.append(part)
        if depth < MAX_MIME_DEPTH:
            todo.extend((child, depth + 1) for child in reversed(_fields(part)))
    return found


def _part(msg: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in _walk(msg):
        if part.get_content_type() == content_type:
            return part
    return None


def _original_headers(msg: email.message.Message) -> str | None:
    for content_type in ORIGINAL_PARTS:
        part = _part(msg, content_type)
        if part is None:
            continue
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
            return "".join(f"{k}: {v}\n" for k, v in payload[0].items())
        decoded = part.get_payload(decode=True)
        if isinstance(decoded, bytes):
            return decoded.decode("utf-8", "replace")
    return None


def _fields(part: email.message.Message) -> list[email.message.Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    return []


def _action(value: Any) -> str:
    """RFC 3464's Action, read as MTAs really write it: "failure", "failed (Bad destination mailbox address)",
    "Delayed"."""
    word = str(value or "").strip().lower()
    for prefix, action in (("fail", "failed"), ("delay", "delayed"), ("deliver", "delivered"),
                           ("relay", "relayed"), ("expand", "expanded")):
        if word.startswith(prefix):
            return action
    return ""


def _dsn_findings(msg: email.message.Message) -> list[Finding]:
    """The failed and delayed recipients of an RFC 3464 report, read leniently: a `Status` may be a bare SMTP
    code (553) and an `Action` a word of its own. Empty when the report gives nothing to go on (the caller
    then reads it as any other bounce); NotTied when it reports only deliveries."""
    status_part = _part(msg, "message/delivery-status")
    blocks = _fields(status_part) if status_part is not None else []
    if len(blocks) < 2:
        return []
    reporting = _host_name(blocks[0].get("Reporting-MTA"))
    findings, delivered = [], 0
    for block in blocks[1:]:
        action = _action(block.get("Action"))
        status_field = " ".join(str(block.get("Status", "")).split())
        diagnostic = _after_semicolon(block.get("Diagnostic-Code")) or ""
        status = domain.status_in(status_field)
        smtp_code = domain.smtp_code_in(status_field) or domain.smtp_code_in(diagnostic)
        if action in ("delivered", "relayed", "expanded"):
            delivered += 1
            continue
        first = (status or str(smtp_code or ""))[:1]
        if action not in ("failed", "delayed") and first not in ("4", "5"):
            continue
        permanent = action == "failed" and first != "4" if action else first == "5"
        verdict = domain.classify_bounce(status=status or domain.status_in(diagnostic), smtp_code=smtp_code,
                                         text=diagnostic, permanent=permanent)
        described = diagnostic or f"{action or 'failed'} with status {status_field}"
        findings.append(Finding("bounce", verdict.bounce_class, status=status or domain.status_in(diagnostic),
                                smtp_code=smtp_code, diagnostic=_diagnostic(described, verdict),
                                reporting=reporting))
    if not findings and delivered == len(blocks) - 1:
        raise NotTied("the DSN reports only successful delivery (Action delivered, relayed or expanded)")
    return findings


def _other_bounce(msg: email.message.Message) -> Finding:
    """A bounce in any other format: flufl.bounce's detectors say whether it failed for good or for now, the
    codes and phrases of its explanation (never of the quoted original) say why."""
    permanent: bool | None = None
    try:
        temporary, failed = all_failures(msg)
        permanent = True if failed else False if temporary else None
    except Exception:  # its detectors assume well-formed mail (e.g. one without From crashes them)
        log.info("bounce detectors could not read an inbound mail; classifying it by its text", exc_info=True)
    text = _explanation(msg)
    if permanent is None and _auto_reply(msg) and not _failure_code_in(text):
        # An out-of-office reply's words ("blocked", "junk folder", "checked for viruses", "temporarily away")
        # are no refusal: only a failure code, or the detectors, make an automatic reply a bounce.
        raise NotABounce("an automatic reply (RFC 3834) with no failure code, not a bounce")
    verdict = domain.classify_bounce(status=None, smtp_code=None, text=text, permanent=permanent)
    if verdict.bounce_class == "undetermined" and permanent is None and _auto_reply(msg):
        raise NotABounce("an automatic reply (RFC 3834), not a bounce")
    evidence = _evidence_line(text)
    return Finding("bounce", verdict.bounce_class, status=domain.status_in(evidence),
                   smtp_code=domain.smtp_code_in(evidence),
                   diagnostic=_diagnostic(evidence or "non-standard bounce", verdict))


ORIGINAL_PARTS = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")
# Where a plain-text bounce starts quoting the original message (qmail, Exim, Sendmail, Exchange, Postfix).
ORIGINAL_FOLLOWS = re.compile(r"^[ \t]*-{2,}.*(original message|copy of (the|your) message|below this line"
                              r"|returned message|undelivered message|headers? of the original|original headers)",
                              re.IGNORECASE | re.MULTILINE)
EXPLANATION_LIMIT = 20_000
HTML_TAG = re.compile(r"<[^<>]*>")


def _text_of(raw: bytes, charset: str | None) -> str:
    """A text part's bytes in its charset; UTF-8 when the charset is unknown (`unknown-8bit`, RFC 1428) or is
    not a text encoding at all (`base64`)."""
    try:
        return raw.decode(charset or "utf-8", "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _explanation(msg: email.message.Message, *, cut_original: bool = True) -> str:
    """The human-readable text of a bounce, without the original message it may quote inline (unless
    `cut_original` is False) or attach."""
    texts: list[str] = []

    def visit(part: email.message.Message, depth: int) -> None:
        content_type = part.get_content_type()
        if content_type in ORIGINAL_PARTS or content_type.startswith("message/"):
            return
        if part.is_multipart():
            if depth < MAX_MIME_DEPTH:
                for child in _fields(part):
                    visit(child, depth + 1)
            return
        if part.get_content_maintype() != "text":
            return
        raw = part.get_payload(decode=True)
        text = _text_of(raw[:4 * EXPLANATION_LIMIT], part.get_content_charset()) if isinstance(raw, bytes) else ""
        if content_type == "text/html":  # a tag holds no "<": linear, where "<[^>]*>" was quadratic in "<"s
            text = html.unescape(HTML_TAG.sub(" ", text))
        texts.append(text)

    visit(msg, 0)
    text = "\n".join(texts)[:EXPLANATION_LIMIT]
    cut = ORIGINAL_FOLLOWS.search(text) if cut_original else None
    return text[:cut.start()] if cut else text


def _evidence_line(text: str) -> str:
    """The line that says most: the first with a status or reply code, else with a known phrase."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    for line in lines:
        if domain.status_in(line) or domain.smtp_code_in(line):
            return line
    for line in lines:
        if any(pattern.search(line) for _, pattern, _ in domain.BOUNCE_PHRASES):
            return line
    return ""


def _diagnostic(described: str, verdict: domain.BounceVerdict) -> str:
    """Why, for people: the report's words with the addresses it quotes left out (its message id says whose)."""
    return f"{domain.without_addresses(described)} [{verdict.bounce_class}: {verdict.why}]"[:1000]


# A failure code where a refusal writes one: a reply code with its enhanced status ("550 5.1.1", "550-5.7.1"),
# or a code after "Status:", "smtp;" or "said:". Not a bare "5.7.25" (a date) or "555-0134" (a phone number),
# which an out-of-office reply may well hold.
REFUSAL_CODE = re.compile(r"\b[45][0-5]\d[ -][45]\.\d{1,3}\.\d{1,3}\b"
                          r"|(?:status:|smtp;|said:)\s*(?:[45]\.\d{1,3}\.\d{1,3}|[45][0-5]\d)\b", re.IGNORECASE)


def _failure_code_in(text: str) -> bool:
    """Whether the text quotes a refusal's code (REFUSAL_CODE)."""
    return REFUSAL_CODE.search(text) is not None


# Headers auto-responders write besides RFC 3834's Auto-Submitted: vacation(1) and procmail's `Precedence: junk`
# or `bulk` (RFC 2076), Outlook's rules and Exchange's OOF `X-Auto-Response-Suppress`, cPanel's and others'
# X-Autoreply / X-Autorespond.
AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Response-Suppress")
AUTO_REPLY_PRECEDENCE = {"auto_reply", "bulk", "junk", "list"}
# Subjects auto-responders start with (Outlook writes "Automatic reply:" in the reader's language, Gmail and
# Apple Mail the user's own text, often "Out of office").
AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|answer)\b|auto:|autoreply|out of (the )?office|\bOOO\b|away from"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|absence du bureau"
    r"|respuesta autom[áa]tica|fuera de la oficina|risposta automatica|fuori sede|automatisch antwoord"
    r"|afwezig|resposta autom[áa]tica|odpowied[źz] automatyczna|automatick[áa] odpov[ěe][ďd]"
    r"|automat(isk|iskt) svar|automaattinen vastaus|autom[āa]tisk[āa] atbilde|automatinis atsakymas"
    r"|automaatne vastus|автоматический ответ|автоматична відповідь|otomatik yan[\u0131i]t)",
    re.IGNORECASE)


def _subject(msg: email.message.Message) -> str:
    raw = msg.get("Subject")
    if raw is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(raw))))
    except (LookupError, ValueError, UnicodeError, email.errors.HeaderParseError):
        return str(raw)


def _auto_reply(msg: email.message.Message) -> bool:
    """Whether the mail calls itself an automatic reply. A report (multipart/report) never is: a DSN also
    says Auto-Submitted (RFC 3834 5), and its failure is what it reports."""
    if msg.get_content_type() == "multipart/report":
        return False
    auto = str(msg.get("Auto-Submitted", "no")).strip().lower()
    return (auto != "no" or any(msg.get(name) is not None for name in AUTO_REPLY_HEADERS)
            or str(msg.get("Precedence", "")).strip().lower() in AUTO_REPLY_PRECEDENCE
            or AUTO_REPLY_SUBJECT.match(_subject(msg)) is not None)


def _arf_finding(msg: email.message.Message) -> Finding:
    part = _part(msg, "message/feedback-report")
    if part is None:
        raise NotTied("multipart/report of type feedback-report without a message/feedback-report part")
    blocks = _fields(part)
    fields = blocks[0] if blocks else email.message_from_string(str(part.get_payload()))
    feedback_type = str(fields.get("Feedback-Type", "")).strip().lower()
    if not feedback_type:
        raise NotTied("feedback report without Feedback-Type")
    arrival = None
    if fields.get("Arrival-Date"):
        try:
            arrival = parsedate_to_datetime(str(fields["Arrival-Date"])).astimezone(UTC)
        except (TypeError, ValueError, OverflowError):  # OverflowError: 9999-12-31 in a zone behind UTC
            arrival = None
    reporting = _host_name(fields.get("Reporting-MTA"))
    return Finding("complaint", feedback_type=feedback_type if feedback_type in FEEDBACK_TYPES else "other",
                   reporting=reporting, arrival_date=arrival)


def _after_semicolon(value: Any) -> str | None:
    """What follows RFC 3464's type (`dns;`, `smtp;`), or the whole value when it names none."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text.split(";", 1)[1].strip() if ";" in text else text


def _host_name(value: Any) -> str | None:
    """A reporting MTA's or domain's name, or None when there is none a Domain of the contract can hold:
    empty, longer than 255 characters, or with characters that are not text."""
    name = _after_semicolon(value)
    return name if name and len(name) <= 255 and name.isprintable() and _encodable(name) else None


def _encodable(text: str) -> bool:
    """Not holding the surrogates that stand for undecodable bytes (SMTPUTF8 sessions pass them on)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


INBOUND_CONSUMER = "delivery.inbound"  # the `consumer` of its dead letters


class InboundHandler:
    """aiosmtpd handler: RCPT accepts only the bounce domain; DATA turns a report into events."""

    def __init__(self, reader: ReportReader, store: DeliveryStore, publisher: EventPublisher,
                 bounce_domain: str) -> None:
        self._reader = reader
        self._store = store
        self._publisher = publisher
        self._bounce_domain = bounce_domain.lower()
        expect_dead_letters(INBOUND_CONSUMER, ["herald.delivery"], ["invalid"])  # the first one alerts too

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.rpartition("@")[2].lower() != self._bounce_domain:
            return f"550 5.1.2 this server only takes reports for {self._bounce_domain}"
        if len(envelope.rcpt_tos) >= MAX_INBOUND_RECIPIENTS:
            metrics.INBOUND.labels("too_many_recipients").inc()
            return f"452 4.5.3 at most {MAX_INBOUND_RECIPIENTS} recipients a message"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        recipients = list(envelope.rcpt_tos)
        received = max(int(getattr(server, "received_bytes", 0)), len(data))
        if received > len(data):
            metrics.INBOUND.labels("truncated").inc()
            log.info("an inbound mail of %d bytes is read by its first %d", received, len(data),
                     extra={"recipients": ",".join(recipients)[:1000]})
        try:
            try:
                result = await self.receive(recipients, data, str(envelope.mail_from or ""), received)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # a mail we could not read: kept with the reason, never lost
                log.exception("inbound mail could not be read; dead-lettering it")
                await self._dead_letter(data, f"unreadable: {type(exc).__name__}: {exc}", recipients, received)
                result = "dead_lettered"
        except Exception:
            log.exception("inbound report could not be recorded; asking the sender to retry")
            metrics.INBOUND.labels("retry_later").inc()
            return "451 4.3.0 temporarily unable to record the report, try again later"
        metrics.INBOUND.labels(result).inc()
        return "250 OK"

    async def receive(self, recipients: list[str], data: bytes, mail_from: str, received: int | None = None) -> str:
        """'recorded', 'unsubscribe', 'auto_reply' or 'dead_lettered'. Infrastructure errors propagate (the
        remote retries). A report tied to a message of ours is recorded whatever its format; a message gets
        at most one bounce event per class, however many reports (or mentions in one) name it. `data` may be
        the head of a larger mail of `received` bytes (MAX_INBOUND_BYTES)."""
        try:
            msg = email.message_from_bytes(data)
        except RecursionError:  # parts nested thousands deep (email's parser recurses): its head still ties it
            msg = email.parser.BytesParser().parsebytes(data, headersonly=True)
        unsubscribes = [found for rcpt in recipients
                        if (found := self._reader.tokens.message_from_local_part(rcpt.rpartition("@")[0], "u"))]
        if unsubscribes:
            return await self._unsubscribe(unsubscribes, data, recipients, received)
        try:
            ids = self._reader.message_ids(recipients, msg)
            if not ids:
                raise NotTied("no signed return path, quoted address or Message-ID of ours names a message")
            jobs = [await self._store.jobs.find_one({"_id": message_id}) for message_id in ids]
            known = [job for job in jobs if job is not None]
            if not known:
                raise NotTied(f"no message with id {', '.join(ids)} in the ledger")
            findings = self._reader.findings(msg)
        except NotTied as exc:
            await self._dead_letter(data, str(exc), recipients, received)
            return "dead_lettered"
        except NotABounce as exc:
            log.info("inbound mail to a return path is not a report", extra={"reason": str(exc)})
            return "auto_reply"
        report = hashlib.sha256(data).hexdigest()
        events: list[Event] = []
        for job in known:
            flow = await self._flow(job)
            for index, finding in enumerate(findings):
                # Deterministic ids: the same report delivered again (our 250 lost on the way) or another
                # report of the same bounce class gives the same event.
                event_id = (domain.inbound_bounce_event_id(job["_id"], str(finding.bounce_class))
                            if finding.kind == "bounce"
                            else uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"inbound:{job['_id']}:{report}:{index}"))
                events.append(self._event(job, finding, mail_from, flow).model_copy(update={"event_id": event_id}))
        bounces = {str(e.event_id): e for e in events if isinstance(e, MessageBounced)}
        seen = await self._store.bounces_reported(list(bounces))
        fresh = [e for e in events if str(e.event_id) not in seen]
        await self._publisher.publish_many(fresh)
        for event in fresh:
            metrics.record_report(event)
        # Remembered once published: a crash in between publishes the same event id again, which consumers
        # drop as a duplicate.
        await self._store.mark_bounces_reported([k for k in bounces if k not in seen])
        return "recorded" if fresh else "duplicate"

    async def _unsubscribe(self, message_ids: list[str], data: bytes, recipients: list[str],
                           received: int | None = None) -> str:
        """A mail to a message's List-Unsubscribe mailto address (signed, so it names its message)."""
        jobs = [job for message_id in message_ids if (job := await self._store.jobs.find_one({"_id": message_id}))]
        if not jobs:
            await self._dead_letter(data, f"mailto unsubscribe for unknown message {', '.join(message_ids)}",
                                    recipients, received)
            return "dead_lettered"
        report = hashlib.sha256(data).hexdigest()
        await self._publisher.publish_many([UnsubscribeRequested(
            event_id=uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"inbound:{job['_id']}:{report}:unsubscribe"),
            account_id=job["account_id"], producer=PRODUCER, **domain.caused_by(await self._flow(job)),
            payload={"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
                     "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id"),
                     "channel": "mailto"}) for job in jobs])
        return "unsubscribe"

    async def _flow(self, job: Document) -> domain.MessageFlow | None:
        """The message's flow (a campaign message's is its campaign document's, any other's on its job): a report
        about it is of the same flow."""
        if job["kind"] != "campaign":
            return domain.MessageFlow.from_document(job)
        if not job.get("campaign_id"):
            return None
        return await self._store.campaign_flow(job["account_id"], job["campaign_id"])

    def _event(self, job: Document, finding: Finding, mail_from: str,
               flow: domain.MessageFlow | None = None) -> Event:
        ref = {"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
               "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id")}
        envelope = {"account_id": job["account_id"], "producer": PRODUCER, **domain.caused_by(flow)}
        if finding.kind == "complaint":
            reporter = finding.reporting or _host_name(mail_from.rpartition("@")[2]) or "unknown"
            return ComplaintReceived(**envelope, payload={**ref, "feedback_type": finding.feedback_type,
                                                          "reporting_domain": reporter[:255],
                                                          "arrival_date": finding.arrival_date})
        return MessageBounced(**envelope, payload={**ref, "bounce_class": finding.bounce_class,
                                                   "smtp_code": finding.smtp_code,
                                                   "enhanced_status_code": finding.status,
                                                   "diagnostic": finding.diagnostic or "bounce report",
                                                   "source": "dsn", "reporting_mta": finding.reporting})

    async def _dead_letter(self, data: bytes, reason: str, recipients: list[str], received: int | None = None) -> None:
        # Bounded, and written whatever the text holds (a recipient can carry undecodable bytes), so the entry
        # always fits and always encodes: a failure here would answer 451, and the same mail would fail again.
        if received is not None and received > len(data):
            reason = f"{reason} (only its first {len(data)} of {received} bytes are kept)"
        await self._publisher.dead_letter(
            "herald.delivery", data, reason, origin="inbound-smtp", consumer=INBOUND_CONSUMER, key=b"inbound",
            headers=[("herald.inbound.recipients", ",".join(recipients).encode("utf-8", "backslashreplace")[:1000])])
        log.warning("inbound mail dead-lettered", extra={"reason": reason[:500]})


class _Busy(asyncio.Protocol):
    """A connection over the session limit: told to come back later (RFC 5321 4.2.3, 421), then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.7.0 too many connections, try again later\r\n")
        transport.close()


class _CountedSMTP(SMTP):
    """aiosmtpd's SMTP session, reporting its end to the factory that counts sessions."""

    def __init__(self, *args: Any, ended: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ended = ended
        self.received_bytes = 0  # the size of the mail of the last DATA, of which the handler gets the head

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._ended()

    def data_received(self, data: bytes) -> None:
        """Bytes arriving keep the session alive, as a command does (aiosmtpd restarts its idle timer only for
        a command, so a slow peer's DATA was cut off after the idle time, unanswered): the idle time is per
        read, as in Postfix's smtpd_timeout."""
        self._reset_timeout()
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        """Every reply; a 552 (too large: at the end of DATA, or at MAIL FROM when its SIZE is over
        MAX_INBOUND_ACCEPTED_BYTES, which aiosmtpd answers itself) is counted."""
        if isinstance(status, str) and status.startswith("552"):
            metrics.INBOUND.labels("too_large").inc()
            if self.envelope is None or not self.envelope.rcpt_tos:
                log.warning("an inbound mail announced over %d bytes was refused (552) at MAIL FROM",
                            MAX_INBOUND_ACCEPTED_BYTES, extra={"peer": str(self.session.peer)[:100]
                                                               if self.session is not None else None})
        await super().push(status)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA (1.4.6: its replies, its refusal of a line over `line_length_limit`, dot
        transparency), except for size: a mail of up to MAX_INBOUND_ACCEPTED_BYTES is taken and only its first
        MAX_INBOUND_BYTES are kept (whole lines), the size received going to the handler as
        `received_bytes`; a larger one is read to its end, answered 552 and counted. aiosmtpd's own
        limit keeps nothing of a mail over it and answers 552 before any handler sees it: no trace at all.
        Its private `_reader`, `_call_handler_hook` and `_set_post_data_state` are used here only; the inbound
        integration tests run every mail through this."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        head = bytearray()
        received, keeping, too_long, mid_line = 0, True, False, False
        while self.transport is not None:
            try:
                line: bytes = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as exc:
                too_long, keeping = True, False
                line = await self._reader.read(exc.consumed)
            if not mid_line and line == b".\r\n":
                break
            received += len(line)
            starts_line, mid_line = not mid_line, not line.endswith(b"\r\n")
            if keeping and starts_line and not mid_line:
                if len(head) + len(line) > MAX_INBOUND_BYTES:
                    keeping = False
                else:
                    head += line[1:] if line.startswith(b".") else line
        envelope = self.envelope
        if too_long or received > MAX_INBOUND_ACCEPTED_BYTES:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            if too_long:
                await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
                return
            log.warning("an inbound mail over %d bytes was refused (552)", MAX_INBOUND_ACCEPTED_BYTES,
                        extra={"mail_from": str(envelope.mail_from)[:200], "bytes": received,
                               "recipients": ",".join(envelope.rcpt_tos)[:1000]})
            await self.push("552 5.3.4 Error: Too much mail data")
            return
        envelope.content = envelope.original_content = bytes(head)
        self.received_bytes = received
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status if isinstance(status, str) else "250 OK")


class InboundSessions:
    """The inbound server's protocol factory: at most `limit` sessions at once (one more is answered 421 and
    closed), each closed after `idle_seconds` in which nothing came (aiosmtpd's timeout) or once it sent a command
    more often than COMMAND_LIMITS allow (421), messages of at most MAX_INBOUND_ACCEPTED_BYTES (552; their first
    MAX_INBOUND_BYTES are read) and MAX_INBOUND_RECIPIENTS (452, InboundHandler)."""

    def __init__(self, handler: InboundHandler, hostname: str, limit: int, idle_seconds: float) -> None:
        self._handler, self._hostname, self._limit, self._idle = handler, hostname, limit, idle_seconds
        self.live = 0

    def _ended(self) -> None:
        self.live -= 1

    def __call__(self) -> asyncio.Protocol:
        if self.live >= self._limit:
            metrics.INBOUND.labels("refused_busy").inc()
            return _Busy()
        self.live += 1
        return _CountedSMTP(self._handler, data_size_limit=MAX_INBOUND_ACCEPTED_BYTES, enable_SMTPUTF8=True,
                            hostname=self._hostname, timeout=self._idle, ended=self._ended,
                            command_call_limit=COMMAND_LIMITS)
