"""One function per request or incoming event: load state, let the domain decide, publish, and (for
requests) wait until the projection holds the result so the answer reflects it."""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Literal

from aiokafka.structs import RecordMetadata

from herald_shared.commands import KeyedLocks, Recorder
from herald_shared.contract import Event
from herald_shared.contract.delivery import ComplaintReceived, MessageBounced, UnsubscribeRequested
from herald_shared.contract.subscriptions import (
    ConfirmationRequested,
    CustomFieldDefinition,
    FormChallenge,
    MembershipNoticeRequested,
    OptInMode,
)
from herald_shared.kafka import EventPublisher, Reject
from herald_shared.links import LinkSigner
from herald_shared.mongo import Checkpoints, Document
from herald_shared.readmodel import applied

from . import domain, metrics
from .activity import Activity, ActivityPage
from .claims import Claims
from .domain import ConfirmLink, Decision, SubscribeRequest
from .store import SubscriptionsStore


class RecentConfirmations:
    """The confirmations this process decided in the last day, per account and address: merged with what the
    read model holds, so a decision not folded yet (its request timed out waiting, or an import's batch) still
    counts against the rolling 24 hours of the daily caps. Bounded: the least recently used addresses are forgotten
    first. Other processes' decisions not folded yet are held by the day's claims (`claims.py`)."""

    def __init__(self, max_addresses: int = 100_000) -> None:
        self._sent: OrderedDict[tuple[str, str], list[datetime]] = OrderedDict()
        self._max = max_addresses

    def merged(self, account_id: str, email_hash: str, stored: tuple[datetime, ...], now: datetime) -> tuple[
            datetime, ...]:
        mine = [t for t in self._sent.get((account_id, email_hash), ()) if now - t < domain.CONFIRMATION_INTERVAL]
        return tuple(sorted({*map(domain.stored_time, stored), *map(domain.stored_time, mine)}))

    def add_decided(self, account_id: str, email_hash: str, events: list[Event]) -> None:
        """The confirmations among a decision's events (at their own time: the one the read model will hold)."""
        for event in events:
            if isinstance(event, ConfirmationRequested):
                self.add(account_id, email_hash, event.occurred_at)

    def add(self, account_id: str, email_hash: str, at: datetime) -> None:
        key = (account_id, email_hash)
        self._sent[key] = [*self._sent.pop(key, ()), at][-domain.CONFIRMATIONS_PER_ADDRESS_PER_DAY:]
        while len(self._sent) > self._max:
            self._sent.popitem(last=False)


@dataclass(frozen=True)
class PersonalData:
    """What one person's GDPR export holds, in one account."""

    memberships: list[Document]  # erased ones included (the API leaves them out)
    suppression: Document | None  # the account's record that the address is not mailed
    activity: ActivityPage  # of the memberships not erased, newest first (`activity.EXPORT_LIMIT` a page)


class SubscriptionsService:
    def __init__(self, store: SubscriptionsStore, publisher: EventPublisher, checkpoints: Checkpoints,
                 links: LinkSigner, topic: str, activity: Activity, claims: Claims) -> None:
        self.store = store
        self.claims = claims
        self.activity = activity
        self.links = links
        self.recorder = Recorder(publisher, checkpoints, topic, on_published=metrics.record)
        self.checkpoints = checkpoints
        self._serialised = self.recorder.serialised
        # Taken inside a subscriber's lock, never the other way round. Both locks order this process's requests;
        # across processes, what a decision sends is claimed on the store (`_claimed`).
        self._addresses = KeyedLocks()
        self.recent_confirmations = RecentConfirmations()
        self.commit = self.recorder.commit
        self.publish_only = self.recorder.publish_only
        self.wait_until_applied = self.recorder.wait_until_applied

    # Lists

    async def create_list(self, account_id: str, list_id: str | None, name: str, opt_in: OptInMode,
                          custom_fields: list[CustomFieldDefinition]) -> Document:
        list_id = list_id or "l" + secrets.token_hex(6)
        # One creation per account at a time in this process, so concurrent ones cannot all pass the count of
        # live lists (replicas each take their own: a few over the cap at most, never without limit).
        async with self._serialised(f"lists:{account_id}"), self._serialised(f"list:{account_id}:{list_id}"):
            existing = await self.store.list_state(account_id, list_id)
            live = 0 if existing is not None else await self.store.live_lists(account_id, most=domain.MAX_LIVE_LISTS)
            await self.commit(domain.create_list(account_id, list_id, name, opt_in, custom_fields, existing,
                                                 live_lists=live))
        return await self._list(account_id, list_id)

    async def rename_list(self, account_id: str, list_id: str, name: str) -> Document:
        return await self._change_list(account_id, list_id, lambda lst: domain.rename_list(lst, name))

    async def configure_form(self, account_id: str, list_id: str, frame_ancestors: list[str],
                             challenge: FormChallenge) -> Document:
        return await self._change_list(account_id, list_id,
                                       lambda lst: domain.configure_form(lst, frame_ancestors, challenge))

    async def configure_notifications(self, account_id: str, list_id: str, subscribes: bool,
                                      unsubscribes: bool) -> Document:
        return await self._change_list(account_id, list_id,
                                       lambda lst: domain.configure_notifications(lst, subscribes, unsubscribes))

    async def _change_list(self, account_id: str, list_id: str,
                           decide: Callable[[domain.ListState | None], list[Event]]) -> Document:
        """Decide a change of the list on its current state, under its lock; the list as it is then."""
        async with self._serialised(f"list:{account_id}:{list_id}"):
            await self.commit(decide(await self.store.list_state(account_id, list_id)))
        return await self._list(account_id, list_id)

    async def notice(self, account_id: str, list_id: str, subscriber_id: str,
                     change: Literal["subscribed", "unsubscribed"], how: str, email: str | None = None,
                     cause: Event | None = None) -> list[Event]:
        """The customer's notice of a membership change just decided, if its list asks for one (the member's
        address read only then)."""
        lst = await self.store.list_state(account_id, list_id)
        if lst is None or not lst.notifies(change):
            return []
        if email is None:
            doc = await self.store.member(account_id, subscriber_id)
            email = doc.get("email") if doc else None
        return domain.membership_notice(lst, subscriber_id, email, change, how, cause)

    async def delete_list(self, account_id: str, list_id: str) -> None:
        async with self._serialised(f"list:{account_id}:{list_id}"):
            counts = await self.store.status_counts(account_id, list_id)
            await self.commit(domain.delete_list(await self.store.list_state(account_id, list_id),
                                                 sum(counts.values())))

    async def _list(self, account_id: str, list_id: str) -> Document:
        doc = await self.store.list_doc(account_id, list_id)
        if doc is None:
            raise domain.ListNotFound("no such list")
        return doc

    # Subscribers

    def confirm_link(self, account_id: str, subscriber_id: str) -> ConfirmLink:
        """A freshly signed confirmation link (asked for by `domain.subscribe` only when it sends one)."""
        return ConfirmLink(*self.links.confirm_url(account_id, subscriber_id))

    async def subscribe(self, account_id: str, list_id: str, request: SubscribeRequest) -> tuple[Decision, Document]:
        email = domain.normalise_email(request.email)
        request = SubscribeRequest(**{**request.__dict__, "email": email})
        # The address's membership of the list, under whichever id holds it (a CRM's too: one membership per
        # address and list), else the deterministic id.
        subscriber_id = domain.member_id_for(await self.store.members_by_hash(account_id, domain.email_sha256(email)),
                                             account_id, list_id, email)
        async with self._serialised(f"subscriber:{account_id}:{subscriber_id}"):
            lst, (member, version), suppressed_hashes, company_name = await asyncio.gather(
                self.store.list_state(account_id, list_id), self.store.member_and_version(account_id, subscriber_id),
                self.store.suppressed(account_id, [domain.email_sha256(email)]), self.store.company_name(account_id))
            suppressed = bool(suppressed_hashes)
            company = company_name or (lst.name if lst else list_id)
            link = partial(self.confirm_link, account_id, subscriber_id)
            if not domain.needs_confirmation_history(lst, member, suppressed):
                decision = domain.subscribe(lst, member, suppressed, request, company, link)
                await self._commit_claimed(account_id, subscriber_id, version,
                                           [*decision.events, *self._subscribed_notice(lst, decision, request)])
            else:
                # The address's confirmations across the account's lists: read, decided on and recorded by one
                # request at a time, so concurrent requests for one address cannot all pass the daily cap.
                email_hash = domain.email_sha256(email)
                async with self._addresses.hold(f"{account_id}:{email_hash}"):
                    stored = await self.store.confirmations_to_address(account_id, email_hash)
                    now = datetime.now(UTC)
                    sent = domain.ConfirmationsSent(
                        member.confirmation_requested_at if member else None,
                        self.recent_confirmations.merged(account_id, email_hash, stored, now))
                    decision = domain.subscribe(lst, member, suppressed, request, company, link, sent, now)
                    events, claims = await self._claimed(account_id, subscriber_id, version,
                                                         [*decision.events, *self._subscribed_notice(lst, decision,
                                                                                                     request)])
                    if _confirmations(decision.events) and not _confirmations(events):
                        decision = domain.without_confirmation(decision)
                    published = await self._publish_claimed(events, claims)
                    self.recent_confirmations.add_decided(account_id, email_hash, events)
                    await self.wait_until_applied(published)
                if decision.confirmation_withheld:
                    metrics.REFUSED.labels("confirmation_cap").inc()
        doc = await self.store.member(account_id, subscriber_id)
        if decision.events and not applied(doc, decision.events[0]):
            # The list was deleted after it was read here and before these events were folded: the projection
            # dead-lettered them ("list deleted"), and the request is answered as one for the list gone.
            now_list = await self.store.list_state(account_id, list_id)
            if now_list is None or now_list.deleted:
                raise domain.ListNotFound("no such list: it was deleted while this subscribe was recorded")
        assert doc is not None, "the projection holds what was just committed"
        return decision, doc

    async def _claimed(self, account_id: str, subscriber_id: str, version: str,
                       events: list[Event]) -> tuple[list[Event], list[str]]:
        """`events` less the confirmation email and the customer's notice that another process claimed first
        (`claims.py`: the replicas all decide subscribes), and the claims taken for the rest. `version`: the
        membership's, as it was decided on."""
        kept: list[Event] = []
        taken: list[str] = []
        now = datetime.now(UTC)
        for event in events:
            if isinstance(event, ConfirmationRequested):
                email_hash = domain.email_sha256(str(event.payload.email))
                [claim] = await self.claims.confirmations(account_id, [(event.payload.list_id, email_hash)], now)
            elif isinstance(event, MembershipNoticeRequested):
                notice = await self.claims.notice(account_id, subscriber_id, version, now)
                claim = [notice] if notice else None
            else:
                kept.append(event)
                continue
            if claim is not None:
                kept.append(event)
                taken += claim
        return kept, taken

    async def _commit_claimed(self, account_id: str, subscriber_id: str, version: str, events: list[Event]) -> None:
        """`commit`, of what is left once claimed."""
        events, claims = await self._claimed(account_id, subscriber_id, version, events)
        await self.wait_until_applied(await self._publish_claimed(events, claims))

    async def _publish_claimed(self, events: list[Event], claims: list[str]) -> list[RecordMetadata]:
        """Publish; when that fails, the claims go back, so the request's retry can send what they held."""
        try:
            return await self.publish_only(events)
        except Exception:
            await self.claims.release(claims)
            raise

    @staticmethod
    def _subscribed_notice(lst: domain.ListState | None, decision: Decision,
                           request: SubscribeRequest) -> list[Event]:
        if decision.outcome != "active":  # (a double opt-in is noticed when the person confirms)
            return []
        return domain.membership_notice(lst, decision.subscriber_id, request.email, "subscribed", request.channel)

    async def confirm(self, token_account: str, subscriber_id: str, ip: str | None) -> domain.ConfirmOutcome:
        async with self._serialised(f"subscriber:{token_account}:{subscriber_id}"):
            member, version = await self.store.member_and_version(token_account, subscriber_id)
            lst = await self.store.list_state(token_account, member.list_id) if member is not None else None
            events, outcome = domain.confirm(token_account, lst, member, ip)
            if events and member is not None:
                events += await self.notice(token_account, member.list_id, subscriber_id, "subscribed",
                                            "double_opt_in")
            await self._commit_claimed(token_account, subscriber_id, version, events)
        return outcome

    async def unsubscribe(self, account_id: str, subscriber_id: str, source: domain.UnsubscribeSource,
                          campaign_id: str | None = None, message_id: str | None = None) -> Document:
        subscriber_id = await self.store.member_id(account_id, subscriber_id)
        async with self._serialised(f"subscriber:{account_id}:{subscriber_id}"):
            member, version = await self.store.member_and_version(account_id, subscriber_id)
            if member is None:
                raise domain.SubscriberNotFound("no such subscriber")
            events = domain.unsubscribe(account_id, member, source, campaign_id, message_id)
            if events:
                events += await self.notice(account_id, member.list_id, subscriber_id, "unsubscribed", source)
            await self._commit_claimed(account_id, subscriber_id, version, events)
        doc = await self.store.member(account_id, subscriber_id)
        assert doc is not None
        return doc

    # GDPR

    async def export(self, account_id: str, email_hash: str, activity_after: str | None = None) -> PersonalData:
        """The person's memberships, the account's suppression record of the address, and what their messages
        recorded, a page after `activity_after` (an erased membership's activity is deleted; any not deleted yet is
        not shown). The person is
        named by the hash of their address (`domain.email_sha256` of it lower-cased, the event contract's), so any
        address a producer may add is found, not only the ones the API takes."""
        memberships, suppression = await asyncio.gather(self.store.members_by_hash(account_id, email_hash),
                                                        self.store.suppression(account_id, email_hash))
        activity = await self.activity.page(
            account_id, [d["subscriber_id"] for d in memberships if d["status"] != "erased"], activity_after)
        return PersonalData(memberships, suppression, activity)

    async def erase(self, account_id: str, email_hash: str,
                    requested_by: Literal["subscriber", "account", "retention_policy"]) -> int:
        """Erase every membership of the address named by its hash (as `export`)."""
        async with self._erasing(account_id, email_hash):
            docs = await self.store.members_by_hash(account_id, email_hash)
            states = [await self._state(account_id, d["subscriber_id"]) for d in docs]
            events = domain.erase(account_id, states, requested_by)
            await self.commit(events)
        return len(events)

    async def remove_member(self, account_id: str, list_id: str, subscriber_id: str) -> None:
        """The account removes one membership from its list: that membership erased (`domain.remove_member`),
        under its address's erasure lock and its own lock (innermost: a removal still not folded when its answer
        gave up waiting is waited for by the membership's next subscribe or unsubscribe), so it is decided after a
        GDPR erasure of the address, or a subscribe or unsubscribe of the membership, this process is recording."""
        subscriber_id = await self.store.member_id(account_id, subscriber_id)
        found = await self.store.member_state(account_id, subscriber_id)
        async with (self._erasing(account_id, found.email_sha256 if found else ""),
                    self._serialised(f"subscriber:{account_id}:{subscriber_id}")):
            lst, member = await asyncio.gather(self.store.list_state(account_id, list_id),
                                               self.store.member_state(account_id, subscriber_id))
            await self.commit(domain.remove_member(account_id, lst, member))

    def _erasing(self, account_id: str, email_hash: str) -> AbstractAsyncContextManager[None]:
        """One erasure of an address at a time in this process (by the person's request or a removal)."""
        return self._serialised(f"erase:{account_id}:{email_hash}")

    async def _state(self, account_id: str, subscriber_id: str) -> domain.MemberState:
        state = await self.store.member_state(account_id, subscriber_id)
        assert state is not None
        return state


def _confirmations(events: list[Event]) -> bool:
    return any(isinstance(e, ConfirmationRequested) for e in events)


class SuppressionHandler:
    """Consumes herald.delivery: a hard bounce or a complaint suppresses the address (and a complaint
    unsubscribes); an UnsubscribeRequested (the mailto unsubscribe) unsubscribes. Soft bounces and messages
    that are not to a subscriber are not its business."""

    def __init__(self, service: SubscriptionsService) -> None:
        self._service = service
        self._staged: list[Event] = []
        self._published: list[RecordMetadata] = []
        # Within one batch, remember what this handler already decided (the projection is behind).
        self._suppressed_in_batch: set[tuple[str, str]] = set()
        self._unsubscribed_in_batch: set[tuple[str, str]] = set()  # (account, subscriber id)

    async def handle(self, event: Event) -> None:
        if isinstance(event, UnsubscribeRequested):
            await self._unsubscribe_by_mail(event)
            return
        if isinstance(event, MessageBounced) and event.payload.bounce_class == "hard":
            reason: Literal["hard_bounce", "complaint"] = "hard_bounce"
        elif isinstance(event, ComplaintReceived):
            reason = "complaint"
        else:
            return
        ref = event.payload
        if ref.subscriber_id is None or ref.kind not in ("campaign", "confirmation"):
            return  # not a message to a subscriber's address (an account notice, a test)
        member = await self._service.store.member_state_of_id(event.account_id, ref.subscriber_id)
        if member is None:
            raise Reject(f"{event.type} for unknown subscriber {ref.subscriber_id!r} of account {event.account_id!r}")
        key = (event.account_id, member.email_sha256)
        if member.status == "erased":
            # Erasure forgets the person, not that the address must not be mailed: the suppression is recorded
            # by the address hash the erased membership keeps (the account's record says if it already is).
            already = key in self._suppressed_in_batch or bool(
                await self._service.store.suppressed(event.account_id, [member.email_sha256]))
        else:
            # Decided by the membership, not the account's suppression record: someone who came back through a
            # fresh double opt-in is active again, and a new hard bounce must suppress them again.
            already = key in self._suppressed_in_batch or member.status == "suppressed"
        if (event.account_id, member.subscriber_id) in self._unsubscribed_in_batch:
            member = domain.MemberState(member.subscriber_id, member.list_id, member.email_sha256, "unsubscribed")
        events = domain.suppress(event.account_id, member, already, reason, event, ref.message_id, ref.campaign_id)
        self._suppressed_in_batch.add(key)
        if reason == "complaint":
            self._unsubscribed_in_batch.add((event.account_id, member.subscriber_id))
        self._staged += events

    async def _unsubscribe_by_mail(self, event: UnsubscribeRequested) -> None:
        """A mail to the List-Unsubscribe mailto address (RFC 2369): unsubscribed at once, like one click."""
        ref = event.payload
        if ref.subscriber_id is None:
            raise Reject(f"UnsubscribeRequested for message {ref.message_id!r}, which was not to a subscriber")
        member = await self._service.store.member_state_of_id(event.account_id, ref.subscriber_id)
        if member is None:
            raise Reject(f"UnsubscribeRequested for unknown subscriber {ref.subscriber_id!r} of account "
                         f"{event.account_id!r}")
        if (event.account_id, member.subscriber_id) in self._unsubscribed_in_batch:
            return
        unsubscribed = domain.unsubscribe(event.account_id, member, "mailto", ref.campaign_id, ref.message_id,
                                          cause=event)
        if unsubscribed:
            unsubscribed += await self._service.notice(event.account_id, member.list_id, member.subscriber_id,
                                                       "unsubscribed", "mailto", cause=event)
        self._staged += unsubscribed
        self._unsubscribed_in_batch.add((event.account_id, member.subscriber_id))

    async def flush(self) -> None:
        """Publish what was decided (once: a retry after a failed wait must not publish it again), then wait
        until the projection shows it, so the next batch decides on up-to-date state."""
        if self._staged:
            self._published = await self._service.publish_only(self._staged)
            self._staged = []
        await self._service.wait_until_applied(self._published)
        self._published = []
        self._suppressed_in_batch.clear()
        self._unsubscribed_in_batch.clear()
