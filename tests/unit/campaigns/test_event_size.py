"""A campaign is refused when an event its content travels in would be larger than Kafka carries
(`domain.MAX_EVENT_BYTES`), and the scheduler takes each due campaign on its own: one that fails for a reason of
its own is held back, and the others go on."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from herald_campaigns import domain
from herald_campaigns.domain import MAX_EVENT_BYTES, CampaignState, CampaignTooLarge, Draft, ListInfo
from herald_campaigns.handlers import SCHEDULER_BATCH, CampaignsService, HeldBack
from herald_campaigns.screening import Screening
from herald_shared.contract import serialize_event
from herald_shared.contract.campaigns import CampaignContent, CampaignReturned
from herald_shared.kafka import (
    DLQ_CONSUMER,
    DLQ_FAILED_AT,
    DLQ_REASON,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    MAX_REASON_CHARS,
    MAX_REQUEST_BYTES,
    event_headers,
)

NEWS = ListInfo("news", {"city": "text"})
ACME = domain.Senders(verified=frozenset({"acme.example"}))
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
NOTHING = Screening(matches=(), refusals=())


def draft(html_chars: int, *, text_body: str | None = "b", fill: str = "a") -> Draft:
    return Draft(name="N", list_id="news", subject="Our news", from_name="Acme", from_email="news@acme.example",
                 html_body="<p>" + fill * html_chars + "</p>", text_body=text_body)


def refusal(html_chars: int, **changes: str | None) -> CampaignTooLarge:
    with pytest.raises(CampaignTooLarge) as refused:
        domain.create("acme", "c1", draft(html_chars, **changes), NEWS, None, senders=ACME)  # type: ignore[arg-type]
    return refused.value


def at_the_bound() -> int:
    """The html_body length (in `a`s) whose draft's largest event is MAX_EVENT_BYTES exactly: one byte a letter."""
    probe = MAX_EVENT_BYTES + 10_000
    return probe - (refusal(probe).encoded_bytes - MAX_EVENT_BYTES)


def test_a_draft_at_the_bound_is_taken_and_one_byte_more_refused_with_the_sizes() -> None:
    chars = at_the_bound()
    [created] = domain.create("acme", "c1", draft(chars), NEWS, None, senders=ACME)
    assert domain.encoded_bytes(created) < MAX_EVENT_BYTES  # a test to 5 long addresses is the largest
    over = refusal(chars + 1)
    assert (over.http_status, over.code) == (413, "campaign_too_large")
    assert (over.event, over.encoded_bytes, over.limit_bytes) == ("CampaignTestRequested", MAX_EVENT_BYTES + 1,
                                                                  MAX_EVENT_BYTES)
    assert "1,000,001 bytes" in over.detail and "1 bytes smaller" in over.detail
    assert over.errors == [("body.html_body", "the campaign is 1 bytes over the 1,000,000 an event may hold"),
                           ("body.text_body", "the campaign is 1 bytes over the 1,000,000 an event may hold")]


def test_the_bound_is_in_bytes_not_characters() -> None:
    """A letter outside ASCII is 2 bytes in the event: 600,000 of them are over, though fewer characters."""
    assert refusal(600_000, fill="ā").encoded_bytes > 1_200_000
    domain.create("acme", "c1", draft(400_000, fill="ā"), NEWS, None, senders=ACME)


def test_the_text_part_derived_from_the_html_counts_too() -> None:
    """600,000 characters of HTML with no text_body: the derived text part doubles the event (R7, finding 2)."""
    refused = refusal(600_000, text_body=None)
    assert refused.encoded_bytes > 1_200_000
    assert [where for where, _ in refused.errors or ()] == ["body.html_body"]  # the author gave no text_body
    domain.create("acme", "c1", draft(600_000), NEWS, None, senders=ACME)


def test_the_drafts_queued_event_is_within_the_bound_with_the_longest_send_time() -> None:
    chars = at_the_bound()
    state = stored(draft(chars), status="scheduled", send_at=NOW)
    [queued] = domain.queue(state, NOW + timedelta(seconds=1), senders=ACME, lst=NEWS)
    assert domain.encoded_bytes(queued) <= MAX_EVENT_BYTES


def stored(d: Draft, **changes: object) -> CampaignState:
    """A campaign as the read model holds it, whatever its size (one stored before the size rule)."""
    content = CampaignContent(subject=d.subject, from_name=d.from_name, from_email=d.from_email,
                              html_body=d.html_body, text_body=d.text_body or " ")
    state = CampaignState(account_id="acme", campaign_id="c1", status="draft", name=d.name, list_id=d.list_id,
                          segment={}, content=content)
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def test_a_draft_stored_before_the_rule_is_refused_at_submission_edit_and_duplication() -> None:
    old = stored(draft(MAX_EVENT_BYTES))
    with pytest.raises(CampaignTooLarge) as submitted:
        domain.submittable(old, "c1", NEWS, senders=ACME)
    assert submitted.value.event == "CampaignQueued" and submitted.value.errors is None
    with pytest.raises(CampaignTooLarge):
        domain.edit(old, "c1", draft(MAX_EVENT_BYTES), NEWS, senders=ACME)  # the same edit again too
    with pytest.raises(CampaignTooLarge):
        domain.duplicate(old, "c1", "c2", NEWS)
    # ...and edited smaller, it goes on
    assert domain.edit(old, "c1", draft(1000), NEWS, senders=ACME)


def test_a_scheduled_campaign_stored_before_the_rule_goes_back_to_its_author_at_its_time_with_its_size() -> None:
    """Its CampaignQueued could never be published: sent back to draft (content_too_large), not retried for ever."""
    old = stored(draft(MAX_EVENT_BYTES), status="scheduled", send_at=NOW)
    due = NOW + timedelta(seconds=1)
    [returned] = domain.queue(old, due, senders=ACME, lst=NEWS)
    assert isinstance(returned, CampaignReturned) and returned.payload.reason == "content_too_large"
    size = domain.encoded_bytes(domain._queued(old, NOW, review_required=False))
    assert size > MAX_EVENT_BYTES
    detail = returned.payload.detail
    assert f"{size:,} bytes encoded" in detail and f"over the {MAX_EVENT_BYTES:,} bytes" in detail, detail
    assert f"{size - MAX_EVENT_BYTES:,} bytes smaller" in detail and "submit it again" in detail
    doc = {**dataclasses.asdict(old), "content": old.content.model_dump(mode="json")}
    back = domain.evolve(doc, returned, due)
    assert back is not None and (back["status"], back["send_at"]) == ("draft", None)
    assert back["returned"] == {"reason": "content_too_large", "detail": detail, "at": due}
    assert domain.queue(domain.state_of(back), due, senders=ACME, lst=NEWS) == []  # once: a draft is not due
    # the sender is checked first: a campaign both too large and From a removed domain says the latter
    [unverified] = domain.queue(old, due, senders=domain.Senders(), lst=NEWS)
    assert unverified.payload.reason == "sender_unverified"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("html", "reason", "said"), [
    ('<a href="https://{{ city }}/">x</a>', "content_refused", "https://{{ city }}/"),
    ("".join(f'<a href="https://acme.example/{n}">{n}</a>' for n in range(251)), "too_many_links", "251"),
])
def test_a_campaign_scheduled_before_the_link_rules_goes_back_to_its_author_at_its_time(
        html: str, reason: str, said: str) -> None:
    """Scheduled before 2026-12-07, it went out with a host each member's value chose, or with more links than
    delivery rewrites at a bearable cost: sent back to draft with the reason instead, once."""
    old = stored(dataclasses.replace(draft(1), html_body=html), status="scheduled", send_at=NOW)
    due = NOW + timedelta(seconds=1)
    [returned] = domain.queue(old, due, senders=ACME, lst=NEWS)
    assert isinstance(returned, CampaignReturned) and returned.payload.reason == reason
    assert said in returned.payload.detail and "submit it again" in returned.payload.detail
    doc = {**dataclasses.asdict(old), "content": old.content.model_dump(mode="json")}
    back = domain.evolve(doc, returned, due)
    assert back is not None and (back["status"], back["returned"]["reason"]) == ("draft", reason)
    fine = stored(dataclasses.replace(draft(1), html_body=html.replace("{{ city }}", "acme.example")[:2000]),
                  status="scheduled", send_at=NOW)
    assert [type(e).__name__ for e in domain.queue(fine, due, senders=ACME, lst=NEWS)] == ["CampaignQueued"]


def test_an_event_at_the_bound_fits_a_record_with_a_dead_letter_copys_headers() -> None:
    """Why MAX_EVENT_BYTES is RECORD_HEADROOM_BYTES below the producer's MAX_REQUEST_BYTES: the key, the headers the
    publisher writes, and those of a dead-letter copy (a reason of MAX_REASON_CHARS characters of 4 bytes each) fit
    with an event of MAX_EVENT_BYTES, as aiokafka measures a record."""
    state = stored(draft(at_the_bound()), status="scheduled", send_at=NOW)
    [queued] = domain.queue(state, NOW + timedelta(seconds=1), senders=ACME, lst=NEWS)
    value = serialize_event(queued) + b" " * (MAX_EVENT_BYTES - domain.encoded_bytes(queued))
    headers = [*event_headers(queued), (DLQ_REASON, ("\U0001f600" * MAX_REASON_CHARS).encode()),
               (DLQ_SOURCE_TOPIC, b"herald.campaigns"), (DLQ_SOURCE_PARTITION, b"5"),
               (DLQ_SOURCE_OFFSET, b"9223372036854775807"), (DLQ_CONSUMER, b"x" * 200),
               (DLQ_FAILED_AT, b"2026-12-07T09:00:00.000000+00:00")]
    key = b"k" * 64  # the longest account id
    assert len(value) == MAX_EVENT_BYTES
    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers) <= MAX_REQUEST_BYTES
    assert MAX_EVENT_BYTES == MAX_REQUEST_BYTES - domain.RECORD_HEADROOM_BYTES == 1_000_000


def test_a_test_whose_values_make_its_event_too_large_is_refused() -> None:
    state = stored(draft(1000))
    values = {f"field{n}": "v" * 1000 for n in range(1001)}
    with pytest.raises(CampaignTooLarge) as refused:
        domain.test_send(state, "c1", NEWS, ["me@acme.example"], values, "api", "t1", NOTHING,
                         senders=ACME)
    assert refused.value.event == "CampaignTestRequested" and "test's values" in refused.value.detail
    assert domain.test_send(state, "c1", NEWS, ["me@acme.example"], {"field": "v" * 1000}, "api", "t1",
                            NOTHING, senders=ACME)


# The scheduler's rounds (`CampaignsService._each`), with a listing and attempts of the test's own


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def paged(keys: list[str], reads: list[str | None]) -> Callable[[str | None], Awaitable[list[str]]]:
    async def page(after: str | None) -> list[str]:
        reads.append(after)
        return [k for k in keys if after is None or k > after][:SCHEDULER_BATCH]
    return page


def attempting(failing: dict[str, Exception], done: list[str]) -> Callable[[str], Awaitable[int]]:
    async def attempt(key: str) -> int:
        if key in failing:
            raise failing[key]
        done.append(key)
        return 1
    return attempt


async def test_a_campaign_no_event_can_carry_is_held_back_and_the_next_due_one_goes_on() -> None:
    clock, done, reads = Clock(), [], []  # type: ignore[var-annotated]
    held = HeldBack(clock=clock)
    keys = ["1/acme/big", "2/other/small"]
    failing: dict[str, Exception] = {"1/acme/big": MessageSizeTooLargeError("The message is 1048627 bytes")}
    assert await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done)) == 1
    assert done == ["2/other/small"] and held.waiting("1/acme/big")
    # held back: the next rounds do not try it until its time comes, 1 s, then 2 s, 4 s ... 900 s at most
    assert await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done)) == 1
    delays = []
    for _ in range(12):
        clock.now += 10_000
        await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done))
        delays.append(held._failing["1/acme/big"][1] - clock.now)
    assert delays[:4] == [2.0, 4.0, 8.0, 16.0] and delays[-1] == 900.0
    # once it passes (edited smaller, say), it is forgotten
    failing.clear()
    clock.now += 10_000
    await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done))
    assert len(held) == 0


async def test_kafka_or_mongodb_away_fails_the_round_as_before() -> None:
    held, done = HeldBack(), []  # type: ignore[var-annotated]
    failing: dict[str, Exception] = {"1/acme/c1": KafkaConnectionError("no broker")}
    with pytest.raises(KafkaConnectionError):
        await CampaignsService._each(held, "queue", paged(["1/acme/c1", "2/acme/c2"], []),
                                     attempting(failing, done))
    assert len(held) == 0 and done == []  # waited out: not held back, and nothing after it tried in that round


async def test_a_page_of_campaigns_held_back_does_not_stop_the_line() -> None:
    held, done, reads = HeldBack(clock=Clock()), [], []  # type: ignore[var-annotated]
    bad = [f"1/acme/c{n:03}" for n in range(SCHEDULER_BATCH + 5)]
    keys = [*bad, "2/other/good"]
    failing: dict[str, Exception] = {key: ValueError("a document no code reads") for key in bad}
    await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done))
    assert done == [] and len(held) == SCHEDULER_BATCH  # a round tries SCHEDULER_BATCH at most
    await CampaignsService._each(held, "queue", paged(keys, reads), attempting(failing, done))
    assert done == ["2/other/good"] and len(held) == len(bad)


async def test_what_is_held_back_of_a_campaign_gone_from_the_listing_is_forgotten() -> None:
    held = HeldBack()
    failing: dict[str, Exception] = {"1/acme/c1": ValueError("bad")}
    await CampaignsService._each(held, "complete", paged(["1/acme/c1"], []), attempting(failing, []))
    assert len(held) == 1
    await CampaignsService._each(held, "complete", paged([], []), attempting(failing, []))  # cancelled meanwhile
    assert len(held) == 0
