"""The inbound SMTP server (aiosmtpd): asynchronous bounces (RFC 3464 DSNs) and feedback-loop reports
(RFC 5965 ARF) become MessageBounced and ComplaintReceived events.

A report is tied to its message by the signed VERP return path it was sent to (`b+<message id>.<tag>@`),
or by the signed addresses and Message-ID of the original message it quotes. A mail that cannot be tied
to a message, or is neither a DSN nor an ARF report, goes to the dead-letter topic with the reason, byte
for byte. The reply to the remote MTA is 250 only once the events or the dead-letter entry are written;
while Kafka or MongoDB are away it is 451, so the sender keeps the mail and tries again.
"""

from __future__ import annotations

import email
import email.message
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from flufl.bounce import all_failures

from herald_shared.contract import Event
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, UnsubscribeRequested
from herald_shared.kafka import (
    DLQ_CONSUMER,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_TOPIC,
    TRANSIENT_ERRORS,
    EventPublisher,
)
from herald_shared.mongo import Document
from herald_shared.topics import DLQ_SUFFIX, TopicNames

from . import metrics
from .domain import HERALD_DELIVERY_NAMESPACE
from .render import MessageTokens
from .store import DeliveryStore

log = logging.getLogger(__name__)
PRODUCER = "delivery"
MAX_INBOUND_BYTES = 900_000  # below Kafka's default message size, so a dead-letter entry always fits
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
SMTP_CODE = re.compile(r"\b([245]\d\d)\b")
TAGGED = re.compile(r"\b([bu]\+[0-9a-fA-F-]{36}\.[a-z2-7]{16})@", re.IGNORECASE)
FEEDBACK_TYPES = {"abuse", "fraud", "virus", "not-spam", "other"}


class NotTied(Exception):
    """The mail cannot be tied to a message of ours, or is not a report; the reason goes to the DLQ."""


@dataclass(frozen=True)
class Finding:
    """One failure or complaint a report states about one of our messages."""

    kind: str  # "bounce" | "complaint"
    bounce_class: str | None = None
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
        original = _original_headers(msg)
        if original is not None:
            for match in TAGGED.finditer(original):
                local = match.group(1)
                found = self.tokens.message_from_local_part(local, local[0].lower())
                if found and found not in ids:
                    ids.append(found)
        # Only signed addresses tie a report to a message: Message-IDs can be computed by an outsider
        # (they are deterministic), so a forged report quoting them could suppress or complain at will.
        return ids

    def findings(self, msg: email.message.Message) -> list[Finding]:
        report_type = (msg.get_param("report-type") or "") if msg.get_content_type() == "multipart/report" else ""
        report_type = str(report_type).lower()
        if report_type == "delivery-status":
            return _dsn_findings(msg)
        if report_type == "feedback-report":
            return [_arf_finding(msg)]
        # Not RFC 3464/5965: let flufl.bounce recognise the many non-standard bounce formats.
        try:
            temporary, permanent = all_failures(msg)
        except Exception as exc:  # its detectors assume well-formed mail (e.g. one without From crashes it)
            raise NotTied(f"bounce detection failed on this mail: {type(exc).__name__}: {exc}") from None
        if permanent:
            return [Finding("bounce", "hard", diagnostic="non-standard bounce: permanent failure")]
        if temporary:
            return [Finding("bounce", "soft", diagnostic="non-standard bounce: temporary failure")]
        raise NotTied("neither a delivery status notification (RFC 3464) nor a feedback report (RFC 5965), "
                      "and no bounce format recognised")


def _part(msg: email.message.Message, content_type: str) -> email.message.Message | None:
    for part in msg.walk():
        if part.get_content_type() == content_type:
            return part
    return None


def _original_headers(msg: email.message.Message) -> str | None:
    for content_type in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
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


def _dsn_findings(msg: email.message.Message) -> list[Finding]:
    status_part = _part(msg, "message/delivery-status")
    if status_part is None:
        raise NotTied("multipart/report of type delivery-status without a message/delivery-status part")
    blocks = _fields(status_part)
    if len(blocks) < 2:
        raise NotTied("delivery-status part without per-recipient fields")
    reporting = _after_semicolon(blocks[0].get("Reporting-MTA"))
    findings = []
    for block in blocks[1:]:
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        match = STATUS.search(status)
        if action not in ("failed", "delayed") or not match:
            continue  # delivered, relayed, expanded: not a failure
        diagnostic = _after_semicolon(block.get("Diagnostic-Code")) or f"{action} with status {status}"
        code = SMTP_CODE.search(diagnostic)
        bounce_class = "hard" if match.group(1) == "5" and action == "failed" else "soft"
        findings.append(Finding("bounce", bounce_class, status=".".join(match.groups()),
                                smtp_code=int(code.group(1)) if code else None, diagnostic=diagnostic[:1000],
                                reporting=reporting))
    if not findings:
        raise NotTied("the DSN reports no failed or delayed recipient")
    return findings


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
        except (TypeError, ValueError):
            arrival = None
    reporting = _after_semicolon(fields.get("Reporting-MTA"))
    return Finding("complaint", feedback_type=feedback_type if feedback_type in FEEDBACK_TYPES else "other",
                   reporting=reporting, arrival_date=arrival)


def _after_semicolon(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text.split(";", 1)[1].strip() if ";" in text else text


class InboundHandler:
    """aiosmtpd handler: RCPT accepts only the bounce domain; DATA turns a report into events."""

    def __init__(self, reader: ReportReader, store: DeliveryStore, publisher: EventPublisher,
                 producer: AIOKafkaProducer, topics: TopicNames, bounce_domain: str) -> None:
        self._reader = reader
        self._store = store
        self._publisher = publisher
        self._producer = producer
        self._topics = topics
        self._bounce_domain = bounce_domain.lower()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address.rpartition("@")[2].lower() != self._bounce_domain:
            return f"550 5.1.2 this server only takes reports for {self._bounce_domain}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        recipients = list(envelope.rcpt_tos)
        try:
            try:
                result = await self.receive(recipients, data, str(envelope.mail_from or ""))
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # a mail we could not read: kept with the reason, never lost
                log.exception("inbound mail could not be read; dead-lettering it")
                await self._dead_letter(data, f"unreadable: {type(exc).__name__}: {exc}", recipients)
                result = "dead_lettered"
        except Exception:
            log.exception("inbound report could not be recorded; asking the sender to retry")
            metrics.INBOUND.labels("retry_later").inc()
            return "451 4.3.0 temporarily unable to record the report, try again later"
        metrics.INBOUND.labels(result).inc()
        return "250 OK"

    async def receive(self, recipients: list[str], data: bytes, mail_from: str) -> str:
        """'recorded', 'unsubscribe' or 'dead_lettered'. Infrastructure errors propagate (the remote retries)."""
        msg = email.message_from_bytes(data)
        unsubscribes = [found for rcpt in recipients
                        if (found := self._reader.tokens.message_from_local_part(rcpt.rpartition("@")[0], "u"))]
        if unsubscribes:
            return await self._unsubscribe(unsubscribes, data, recipients)
        try:
            ids = self._reader.message_ids(recipients, msg)
            if not ids:
                raise NotTied("no signed return path, quoted address or Message-ID of ours names a message")
            findings = self._reader.findings(msg)
            jobs = [await self._store.jobs.find_one({"_id": message_id}) for message_id in ids]
            known = [job for job in jobs if job is not None]
            if not known:
                raise NotTied(f"no message with id {', '.join(ids)} in the ledger")
        except NotTied as exc:
            await self._dead_letter(data, str(exc), recipients)
            return "dead_lettered"
        events: list[Event] = []
        report = hashlib.sha256(data).hexdigest()
        for job in known:
            for index, finding in enumerate(findings):
                # The same report delivered again (our 250 lost on the way) gives the same event ids.
                event = self._event(job, finding, mail_from)
                events.append(event.model_copy(update={"event_id": uuid.uuid5(
                    HERALD_DELIVERY_NAMESPACE, f"inbound:{job['_id']}:{report}:{index}")}))
        await self._publisher.publish_many(events)
        return "recorded"

    async def _unsubscribe(self, message_ids: list[str], data: bytes, recipients: list[str]) -> str:
        """A mail to a message's List-Unsubscribe mailto address (signed, so it names its message)."""
        jobs = [job for message_id in message_ids if (job := await self._store.jobs.find_one({"_id": message_id}))]
        if not jobs:
            await self._dead_letter(data, f"mailto unsubscribe for unknown message {', '.join(message_ids)}",
                                    recipients)
            return "dead_lettered"
        report = hashlib.sha256(data).hexdigest()
        await self._publisher.publish_many([UnsubscribeRequested(
            event_id=uuid.uuid5(HERALD_DELIVERY_NAMESPACE, f"inbound:{job['_id']}:{report}:unsubscribe"),
            account_id=job["account_id"], producer=PRODUCER,
            payload={"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
                     "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id"),
                     "channel": "mailto"}) for job in jobs])
        return "unsubscribe"

    def _event(self, job: Document, finding: Finding, mail_from: str) -> Event:
        ref = {"message_id": job["_id"], "kind": job["kind"], "campaign_id": job.get("campaign_id"),
               "subscriber_id": job.get("subscriber_id"), "list_id": job.get("list_id")}
        envelope = {"account_id": job["account_id"], "producer": PRODUCER}
        if finding.kind == "complaint":
            metrics.COMPLAINTS.labels(finding.feedback_type or "other").inc()
            reporter = finding.reporting or mail_from.rpartition("@")[2] or "unknown"
            return ComplaintReceived(**envelope, payload={**ref, "feedback_type": finding.feedback_type,
                                                          "reporting_domain": reporter[:255],
                                                          "arrival_date": finding.arrival_date})
        metrics.BOUNCES.labels(finding.bounce_class or "hard", "dsn").inc()
        return MessageBounced(**envelope, payload={**ref, "bounce_class": finding.bounce_class,
                                                   "smtp_code": finding.smtp_code,
                                                   "enhanced_status_code": finding.status,
                                                   "diagnostic": finding.diagnostic or "bounce report",
                                                   "source": "dsn", "reporting_mta": finding.reporting})

    async def _dead_letter(self, data: bytes, reason: str, recipients: list[str]) -> None:
        topic = self._topics("herald.delivery") + DLQ_SUFFIX
        headers = [(DLQ_REASON, reason.encode()), (DLQ_SOURCE_TOPIC, b"inbound-smtp"),
                   (DLQ_CONSUMER, b"delivery.inbound"), (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
                   ("herald.inbound.recipients", ",".join(recipients).encode()[:1000])]
        await self._producer.send_and_wait(topic, value=data, key=b"inbound", headers=headers)
        log.warning("inbound mail dead-lettered", extra={"reason": reason})
