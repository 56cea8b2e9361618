"""`scripts/demo`: one customer's story on the running platform (`scripts/run`), through the public APIs, the
hosted pages, the development mailbox and the inbound SMTP server only, with a progress display and a summary.

A bakery signs up; staff approve it; it gets an API key and a list with double opt-in. People subscribe on the
hosted form and through the API; their confirmation emails land in the development mailbox and their links are
followed. 2,000 consented rows are imported. A campaign is screened and queued, delivered to the mailbox, opened
and clicked. Receiving servers mail bounces (RFC 3464 DSNs) and complaints (RFC 5965 ARF reports) to the inbound
server; the complaint rate passes 0.5% and the compliance processor suspends the account. Its next campaign is
held; staff reinstate the account; it goes out. It ends with the campaign reports and the events that flowed
on each topic.

Where things are comes from the same environment `scripts/run` uses (HERALD_RUN_BASE_PORT, HERALD_<SERVICE>_URL,
HERALD_STACK_DIR, HERALD_INBOUND_SMTP_PORT, HERALD_TOPIC_PREFIX, KAFKA_BOOTSTRAP_SERVERS); the staff token is the
one `scripts/run` printed (HERALD_DEMO_STAFF_TOKEN, or its file in the stack's folder). Exit status 0 only when
every step did what the story says."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.header
import email.parser
import email.policy
import mailbox
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from html import unescape
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib
import httpx

from herald_shared.kafka import read_from_start, type_header
from herald_shared.settings import HeraldSettings
from herald_shared.topics import EVENT_TOPICS

ROOT = Path(__file__).resolve().parent.parent
SERVICES = sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))  # scripts/run's order
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 "
           "Safari/605.1.15")
SCANNER = "Mozilla/5.0 (compatible; Proofpoint URL Defense)"
T = TypeVar("T")
# Compliance judges a campaign's rates over at least this many messages (`Policy.minimum_sent`, its default): one
# of 200 sent is 1 of 500, so a small demo needs as many complaints as a campaign of 500 to pass 0.5%.
JUDGED_AT_LEAST = 500


def complaints_past_the_limit(sent: int) -> int:
    """Complaints that take a campaign of `sent` messages a little past the 0.5% abuse rate (PRODUCT.md): 0.6%."""
    return max(sent, JUDGED_AT_LEAST) * 6 // 1000 + 1


class DemoFailed(Exception):
    """A step did not do what the story says."""


@dataclass(frozen=True)
class Where:
    """Where the running platform is, as scripts/run set it up."""

    urls: dict[str, str]
    staff_token: str
    mailbox: Path
    inbound: tuple[str, int]
    settings: HeraldSettings

    @classmethod
    def from_environment(cls) -> Where:
        base = int(os.environ.get("HERALD_RUN_BASE_PORT", "8081"))
        urls = {name: os.environ.get(f"HERALD_{name.upper()}_URL", f"http://127.0.0.1:{base + i}").rstrip("/")
                for i, name in enumerate(SERVICES)}
        stack = Path(os.environ.get("HERALD_STACK_DIR", ROOT / ".stack"))
        token = os.environ.get("HERALD_DEMO_STAFF_TOKEN")
        if not token:
            try:
                token = (stack / "staff-token").read_text().strip()
            except OSError:
                raise DemoFailed(f"no staff token: set HERALD_DEMO_STAFF_TOKEN, or run scripts/run (it writes "
                                 f"{stack / 'staff-token'})") from None
        return cls(urls, token, Path(os.environ.get("HERALD_DEMO_MAILBOX", stack / "mailbox")),
                   (os.environ.get("HERALD_INBOUND_SMTP_HOST", "127.0.0.1"),
                    int(os.environ.get("HERALD_INBOUND_SMTP_PORT", "2525"))),
                   HeraldSettings())  # Kafka and the topic prefix from the environment


class Progress:
    """One line per step, its time and outcome; waits report their progress every few seconds."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.number = 0

    def step(self, title: str) -> Step:
        self.number += 1
        return Step(self, self.number, title)

    @staticmethod
    def say(text: str) -> None:
        print(text, flush=True)


@dataclass
class Step:
    progress: Progress
    number: int
    title: str
    started: float = field(default_factory=time.monotonic)

    def __enter__(self) -> Step:
        Progress.say(f"[{self.number:2}] {self.title} ...")
        return self

    def __exit__(self, kind: Any, error: Any, _: Any) -> None:
        took = time.monotonic() - self.started
        if error is None:
            Progress.say(f"     done in {took:.1f} s")
        else:
            Progress.say(f"     FAILED after {took:.1f} s: {error}")

    def note(self, text: str) -> None:
        Progress.say(f"     {text}")


async def until(what: str, probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float = 120,
                show: Callable[[T], str] | None = None, every: float = 0.3) -> T:
    """Probe until `done`, every `every` seconds; print where it stands every 3 s; DemoFailed after `within`."""
    deadline, shown = time.monotonic() + within, time.monotonic()
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what}: not after {within:.0f} s" + (f" ({show(value)})" if show else ""))
        if show and time.monotonic() - shown >= 3:
            Progress.say(f"     ... {what}: {show(value)}")
            shown = time.monotonic()
        await asyncio.sleep(every)


def expect(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise DemoFailed(f"{response.request.method} {response.request.url.path} answered {response.status_code}: "
                         f"{response.text[:500]}")
    return response.json() if "json" in response.headers.get("content-type", "") else response.text


@dataclass
class Mail:
    """One message of the mailbox: its envelope recipient and subject read once when it arrives (the demo looks
    for mail every few seconds among thousands of messages, and reading every message's headers again at each look
    took most of its CPU while it waited for the confirmations), the whole message parsed only when it is read."""

    rcpt_to: str  # lower-cased
    subject: str
    raw: bytes
    _parsed: EmailMessage | None = None

    @classmethod
    def of(cls, raw: bytes) -> Mail:
        # compat32 (the parser's default): a tenth of the cost of email.policy.default, whose header objects the
        # demo does not need here
        head = email.parser.BytesHeaderParser().parsebytes(raw)
        subject = str(email.header.make_header(email.header.decode_header(head.get("Subject", ""))))
        return cls(str(head.get("X-RcptTo", "")).lower(), subject, raw)

    def text(self, kind: str) -> str:
        """The message's text/`kind` part, decoded; "" when it has none (compat32 again: the demo reads 2,000
        confirmations and as many campaign messages)."""
        for part in email.message_from_bytes(self.raw).walk():
            if part.get_content_type() == f"text/{kind}":
                payload = part.get_payload(decode=True)
                charset = part.get_content_charset() or "utf-8"
                return payload.decode(charset, "replace") if isinstance(payload, bytes) else ""
        return ""

    @property
    def message(self) -> EmailMessage:
        """The whole message (email.policy.default): for the few a bounce or complaint report quotes."""
        if self._parsed is None:
            parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self._parsed = parsed
        return self._parsed


class Mailbox:
    """The development mailbox (a Maildir `scripts/run` has aiosmtpd write): the messages to given addresses."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, Mail] = {}
        self._before = set(self._box().keys()) if path.exists() else set()  # earlier runs' mail: never read

    def _box(self) -> mailbox.Maildir:
        return mailbox.Maildir(self.path, factory=None, create=False)

    def messages(self) -> list[Mail]:
        """What arrived since the demo started."""
        if not self.path.exists():
            return []
        box = self._box()
        for key in box.iterkeys():
            if key not in self._seen and key not in self._before:
                try:
                    raw = box.get_bytes(key)
                except KeyError:
                    continue
                self._seen[key] = Mail.of(raw)
        return list(self._seen.values())

    def to(self, addresses: set[str], subject: str | None = None) -> list[Mail]:
        return [m for m in self.messages() if m.rcpt_to in addresses and (subject is None or subject in m.subject)]


@dataclass
class Customer:
    run: str
    account_id: str = ""
    key: str = ""
    owner_email: str = ""

    def address(self, name: str) -> str:
        return f"{name}.{self.run}@example.net"


class Demo:
    def __init__(self, where: Where, rows: int) -> None:
        self.where = where
        self.rows = rows
        self.progress = Progress()
        self.customer = Customer(uuid.uuid4().hex[:8])
        self.mail = Mailbox(where.mailbox)
        self.http = httpx.AsyncClient(timeout=60)
        self.staff = {"Authorization": f"Bearer {where.staff_token}"}

    def url(self, service: str, path: str) -> str:
        return self.where.urls[service] + path

    def api(self, service: str, method: str, path: str, **kwargs: Any) -> Awaitable[httpx.Response]:
        headers = {"Authorization": f"Bearer {self.customer.key}", **kwargs.pop("headers", {})}
        return self.http.request(method, self.url(service, path), headers=headers, **kwargs)

    async def run(self) -> dict[str, Any]:
        c = self.customer
        with self.progress.step("The bakery signs up, chooses a plan and pays by card (billing)") as step:
            c.owner_email = c.address("owner")
            account = expect(await self.http.post(self.url("billing", "/v1/accounts"), json={
                "company_name": f"Demo Bakery {c.run}", "email": c.owner_email, "username": f"baker{c.run}",
                "password": f"Rye-and-{c.run}-sourdough", "accept_terms": True, "age_18": True}), 201)
            c.account_id = account["account_id"]
            session = expect(await self.http.post(self.url("billing", "/v1/sessions"), json={
                "username": f"baker{c.run}", "password": f"Rye-and-{c.run}-sourdough"}), 201)
            owner = {"Authorization": f"Bearer {session['token']}"}
            plans = expect(await self.http.get(self.url("billing", "/v1/plans")), 200)
            tier = min(t["subscribers"] for t in plans["tiers"] if t["subscribers"] >= self.rows + 100)
            expect(await self.http.put(self.url("billing", "/v1/account/payment-method"), headers=owner,
                                       json={"provider": "simulated", "reference": "sim-card-ok"}), 200, 204)
            expect(await self.http.put(self.url("billing", "/v1/account/plan"), headers=owner,
                                       json={"subscribers": tier}), 200)
            step.note(f"account {c.account_id}, monthly plan of {tier:,} subscribers")
        with self.progress.step("Staff review the new account and approve it (billing's staff API)"):
            expect(await self.http.post(self.url("billing", f"/v1/staff/accounts/{c.account_id}/approval"),
                                        headers=self.staff, json={"note": "demo: a real bakery"}), 200)
        with self.progress.step("The owner issues an API key; every service accepts it") as step:
            issued = expect(await self.http.post(self.url("billing", "/v1/account/api-keys"), headers=owner,
                                                 json={"label": "demo"}), 201)
            c.key = issued["key"]
            # A key tried before a service has it fails, and failures are throttled (429 after a few from one
            # address): asked once a second; a key id's failures are forgotten once the service has the key.
            for service, path in (("subscriptions", "/v1/lists"), ("campaigns", "/v1/campaigns")):
                await until(f"{service} to know the key", lambda s=service, p=path: self.api(s, "GET", p),  # type: ignore[misc]
                            lambda r: r.status_code == 200, within=60, every=1.0)
            step.note(f"key {issued['key_id']}")
        return await self._lists_and_campaigns()

    async def _lists_and_campaigns(self) -> dict[str, Any]:
        c = self.customer
        with self.progress.step("A list with double opt-in (subscriptions)"):
            expect(await self.api("subscriptions", "POST", "/v1/lists", json={
                "list_id": "news", "name": "Bakery news", "opt_in": "double",
                "custom_fields": [{"name": "city", "kind": "text"}]}), 201)
        people = {c.address("form"), *(c.address(f"api{i}") for i in range(3))}
        with self.progress.step("People subscribe: one on the hosted form, three through the API") as step:
            path = f"/subscribe/{c.account_id}/news"
            form = expect(await self.http.get(self.url("subscriptions", path)), 200)
            token = re.search(r'name="form_token" value="([^"]+)"', form)
            if token is None:
                raise DemoFailed("the hosted form has no token")
            await asyncio.sleep(3.2)  # a person takes a few seconds to fill it in (sooner is a bot's post)
            page = expect(await self.http.post(self.url("subscriptions", path), headers={"User-Agent": BROWSER},
                                               data={"form_token": token[1], "email": c.address("form"),
                                                     "first_name": "Ilze", "consent": "yes"}), 200)
            if "Check your inbox" not in page:
                raise DemoFailed("the hosted form did not answer 'Check your inbox'")
            for i in range(3):
                expect(await self.api("subscriptions", "POST", "/v1/lists/news/subscribers", json={
                    "email": c.address(f"api{i}"), "first_name": ["Anna", "Jānis", "Marta"][i],
                    "custom_fields": {"city": "Riga"}, "consent": {"method": "checkout checkbox on bakery.example"}}),
                    201)
            step.note("4 pending, each sent a confirmation email")
        with self.progress.step("Their confirmation emails arrive in the development mailbox; each link is followed"):
            await self._confirm_all(people)
        with self.progress.step(f"A consented CSV import of {self.rows:,} rows: pending until each person confirms") \
                as step:
            lines = ["email,first_name,city,consent_method,consent_at"]
            lines += [f"{c.address(f'row{i:05d}')},Person {i},{['Riga', 'Tartu', 'Vilnius'][i % 3]},"
                      f"paper form at the counter,2026-10-0{1 + i % 9}T10:00:00Z" for i in range(self.rows)]
            report = expect(await self.api("subscriptions", "POST", "/v1/lists/news/imports",
                                           content="\n".join(lines).encode(), headers={"Content-Type": "text/csv"}),
                            202)
            step.note(f"{report['rows_imported']:,} imported, {report['rows_rejected']} rejected; the list asks each "
                      "of them to confirm")
        imported = {c.address(f"row{i:05d}") for i in range(self.rows)}
        with self.progress.step(f"{self.rows:,} confirmation emails arrive; every person follows their link"):
            await self._confirm_all(imported)
            members = self.rows + len(people)
            await until("every member active", lambda: self._counts(), lambda n: n.get("active") == members,
                        within=180, show=lambda n: f"{n.get('active', 0):,} of {members:,} active")
        with self.progress.step("The bakery adds its sending domain: the DNS record that proves it is theirs "
                                "(campaigns)") as step:
            added = expect(await self.api("campaigns", "POST", "/v1/sending-domains",
                                          json={"domain": "bakery.example.com"}), 201)
            record = added["record"]
            step.note(f"{added['status']}: publish TXT {record['name']} \"{record['value']}\", then ask for its "
                      "verification; a local run shares example.com with every account (scripts/run), so its "
                      "campaigns go out meanwhile")
        first = await self._campaign("welcome", "Fresh rye every morning", members)
        opened, clicked = await self._engage(first)
        suspended = await self._reports_from_receivers(first)
        second = await self._held_then_reinstated(members, suspended)
        return {"opened": opened, "clicked": clicked, "campaigns": [first, second]}

    async def _confirm_all(self, people: set[str]) -> None:
        """Wait for each person's confirmation email, then open its link and press Confirm, 20 people at a time."""
        mails = await until("confirmation emails", lambda: self._async(self.mail.to, people),
                            lambda ms: len(ms) >= len(people), within=180,
                            show=lambda ms: f"{len(ms):,} of {len(people):,}")
        confirmed = 0
        gate = asyncio.Semaphore(20)

        async def confirm(message: Mail) -> None:
            nonlocal confirmed
            async with gate:  # parsed in turn: 2,000 parses at once held the loop while answers waited unread
                link = re.search(r"https?://\S+/confirm/[A-Za-z0-9._-]+", message.text("plain"))
                if link is None:
                    raise DemoFailed(f"no confirmation link in the email to {message.rcpt_to}")
                path = "/" + link[0].split("://", 1)[1].split("/", 1)[1]
                page = expect(await self.http.get(self.url("subscriptions", path)), 200)
                token = re.search(r'name="form_token" value="([^"]+)"', page)
                if token is None:
                    raise DemoFailed("the confirmation page has no form")
                done = expect(await self.http.post(self.url("subscriptions", path), data={"form_token": token[1]}),
                              200)
            if "Subscription confirmed" not in done:
                raise DemoFailed("confirming did not say 'Subscription confirmed'")
            confirmed += 1

        await asyncio.gather(*(confirm(m) for m in mails))
        Progress.say(f"     {confirmed:,} confirmed")

    @staticmethod
    async def _async(function: Callable[..., T], *args: Any) -> T:
        return function(*args)

    async def _counts(self) -> dict[str, int]:
        answer = await self.api("subscriptions", "GET", "/v1/lists/news")
        return answer.json().get("counts", {}) if answer.status_code == 200 else {}

    async def _report(self, campaign_id: str) -> dict[str, Any]:
        return expect(await self.api("campaigns", "GET", f"/v1/campaigns/{campaign_id}/report"), 200)  # type: ignore[no-any-return]

    async def _campaign(self, campaign_id: str, subject: str, audience: int) -> str:
        c = self.customer
        with self.progress.step(f"Campaign '{subject}': created, screened, queued (campaigns)") as step:
            html = ('<h1>Good morning {{ first_name | default("friend") }}!</h1><p>Our rye bread is out of the oven '
                    'at 7.</p><p><a href="https://bakery.example.com/rye">See the rye</a> or '
                    '<a href="https://bakery.example.com/shop">order online</a>.</p>')
            expect(await self.api("campaigns", "POST", "/v1/campaigns", json={
                "campaign_id": campaign_id, "name": subject, "list_id": "news", "subject": subject,
                "preheader": "From the Demo Bakery", "from_name": "Demo Bakery",
                "from_email": "hello@bakery.example.com", "html_body": html}), 201)
            submitted = expect(await self.api("campaigns", "POST", f"/v1/campaigns/{campaign_id}/submission",
                                              json={}), 200)
            step.note(f"screening matched {len(submitted['screening'])} prohibited topics; status "
                      f"{submitted['status']}" + (f" ({', '.join(submitted['review_reasons'])})"
                                                  if submitted["review_reasons"] else ""))
            if submitted["status"] == "in_review":
                expect(await self.http.post(
                    self.url("campaigns", f"/v1/staff/campaigns/{c.account_id}/{campaign_id}/approval"),
                    headers=self.staff, json={}), 200)
                step.note("staff approved it")
        with self.progress.step(f"Delivery sends it to the {audience:,} members; it lands in the mailbox"):
            await until("messages sent", lambda: self._report(campaign_id), lambda r: r["sent"] >= audience,
                        within=300, show=lambda r: f"{r['sent']:,} of {audience:,} sent ({r['status']})")
            await until("messages in the mailbox", lambda: self._async(self._campaign_mail, subject),
                        lambda ms: len(ms) >= audience, within=120, show=lambda ms: f"{len(ms):,} of {audience:,}")
        return campaign_id

    def _campaign_mail(self, subject: str) -> list[Mail]:
        run = f".{self.customer.run}@example.net"
        return [m for m in self.mail.messages() if m.rcpt_to.endswith(run) and m.subject == subject]

    async def _engage(self, campaign_id: str) -> tuple[int, int]:
        mails = self._campaign_mail("Fresh rye every morning")
        with self.progress.step("People open it and click (a mail scanner too: counted apart)") as step:
            opened = clicked = 0
            gate = asyncio.Semaphore(20)  # people read their mail at the same time, not one after another

            async def read(i: int, message: Mail) -> None:
                nonlocal opened, clicked
                async with gate:
                    html = unescape(message.text("html"))
                    pixel = re.search(r'src="(https?://[^"]+/t/o/[^"]+)"', html)
                    links = re.findall(r'href="(https?://[^"]+/t/c/[^"]+)"', html)
                    if pixel is None or not links:
                        raise DemoFailed(f"no tracking in the message to {message.rcpt_to}")
                    if i % 3 == 0:
                        expect(await self.http.get(pixel[1], headers={"User-Agent": BROWSER}), 200)
                        opened += 1
                    if i % 10 == 0:
                        answer = await self.http.get(links[0], headers={"User-Agent": BROWSER},
                                                     follow_redirects=False)
                        if answer.status_code != 302:
                            raise DemoFailed(f"a click answered {answer.status_code}, not a redirect")
                        clicked += 1
                    if i == 1:  # a scanner follows a link (of a message no reader clicks): marked, not a reader's
                        await self.http.get(links[1], headers={"User-Agent": SCANNER}, follow_redirects=False)

            await asyncio.gather(*(read(i, m) for i, m in enumerate(mails)))
            report = await until("opens and clicks in the report", lambda: self._report(campaign_id),
                                 lambda r: r["opens"]["total"] >= opened and r["clicks"]["total"] >= clicked
                                 and r["clicks"]["automated"] >= 1, within=60)
            step.note(f"{opened} opens and {clicked} clicks by readers, {report['clicks']['automated']} by a scanner")
        return opened, clicked

    async def _reports_from_receivers(self, campaign_id: str) -> dict[str, Any]:
        mails = self._campaign_mail("Fresh rye every morning")
        bounced, complained = mails[5:5 + len(mails) // 50], mails[-complaints_past_the_limit(len(mails)):]
        with self.progress.step(f"Receiving servers mail {len(bounced)} bounces (DSN) and {len(complained)} "
                                f"complaints (ARF) to the inbound server") as step:
            for message in bounced:
                await self._mail_inbound(str(message.message["X-MailFrom"]), dsn(message.message))
            for message in complained:
                await self._mail_inbound(f"fbl@{str(message.message['X-MailFrom']).rpartition('@')[2]}",
                                         arf(message.message))
            report = await until("bounces and complaints in the report", lambda: self._report(campaign_id),
                                 lambda r: r["bounces"]["hard"] >= len(bounced) and r["complaints"] >= len(complained),
                                 within=60)
            step.note(f"hard bounce rate {percent(report['rates']['hard_bounce_rate'])}, complaint rate "
                      f"{percent(report['rates']['abuse_rate'])} (the terms allow 0.5%)")
        with self.progress.step("The compliance processor suspends the account") as step:
            rates = await until("the suspension", self._rates, lambda r: bool(r.get("suspended")), within=60)
            why = rates["suspension"]
            step.note(f"suspended: {why['metric']} {percent(why['value'])} over {percent(why['threshold'])} on "
                      f"{why['scope']} ({why['counts']['complaints']} complaints of {why['counts']['sent']:,} sent)")
            notice = await until("the notice to the account's address",
                                 lambda: self._async(self.mail.to, {self.customer.owner_email}),
                                 lambda ms: any("suspend" in m.subject.lower() for m in ms), within=60)
            step.note(f"the owner was emailed: '{[m.subject for m in notice][-1]}'")
        return rates

    async def _rates(self) -> dict[str, Any]:
        answer = await self.http.get(self.url("compliance", f"/v1/accounts/{self.customer.account_id}/rates"),
                                     headers=self.staff)
        return answer.json() if answer.status_code == 200 else {}

    async def _mail_inbound(self, recipient: str, report: bytes) -> None:
        host, port = self.where.inbound
        await aiosmtplib.send(report, sender="MAILER-DAEMON@mx.receiver.example", recipients=[recipient],
                              hostname=host, port=port, timeout=30)

    async def _held_then_reinstated(self, members: int, suspended: dict[str, Any]) -> str:
        campaign_id, subject = "weekend", "Weekend pastries"
        with self.progress.step(f"The next campaign '{subject}' is held while the account is suspended") as step:
            html = "<p>Hello {{ first_name }}, cinnamon buns all weekend.</p>"
            expect(await self.api("campaigns", "POST", "/v1/campaigns", json={
                "campaign_id": campaign_id, "name": subject, "list_id": "news", "subject": subject,
                "from_name": "Demo Bakery", "from_email": "hello@bakery.example.com", "html_body": html}), 201)
            expect(await self.api("campaigns", "POST", f"/v1/campaigns/{campaign_id}/submission", json={}), 200)
            held = await until("the campaign held", lambda: self._report(campaign_id),
                               lambda r: r["status"] in ("suspended", "held"), within=60)
            await asyncio.sleep(2)
            if (await self._report(campaign_id))["sent"]:
                raise DemoFailed("a suspended account's campaign was sent")
            step.note(f"status {held['status']}, nothing sent")
        with self.progress.step("Staff reinstate the account (compliance's staff API); the held campaign goes out"):
            expect(await self.http.post(
                self.url("compliance", f"/v1/accounts/{self.customer.account_id}/reinstatement"),
                headers=self.staff, json={"reason": "demo: the bakery cleaned its list"}), 200, 202)
            # Those who bounced hard are suppressed and those who complained unsubscribed: the rest get it.
            audience = (await self._counts()).get("active", 0)
            await until("the held campaign sent", lambda: self._report(campaign_id), lambda r: r["sent"] >= audience,
                        within=300, show=lambda r: f"{r['sent']:,} of {audience:,} sent ({r['status']})")
        return campaign_id

    async def summary(self, story: dict[str, Any]) -> None:
        Progress.say("\n== Campaign reports (GET /v1/campaigns/{id}/report)")
        Progress.say(f"{'campaign':10} {'sent':>6} {'delivered':>9} {'hard':>5} {'opens':>6} {'clicks':>6} "
                     f"{'scanner':>7} {'complaints':>10} {'unsubs':>6}  status")
        for campaign_id in story["campaigns"]:
            r = await self._report(campaign_id)
            Progress.say(f"{campaign_id:10} {r['sent']:6,} {r['delivered']:9,} {r['bounces']['hard']:5} "
                         f"{r['opens']['total']:6} {r['clicks']['total']:6} "
                         f"{r['opens']['automated'] + r['clicks']['automated']:7} {r['complaints']:10} "
                         f"{r['unsubscribes']:6}  {r['status']}")
        Progress.say(f"\n== Events of account {self.customer.account_id}, by topic (what flowed where)")
        counts: dict[str, Counter[str]] = {}
        topics = [self.where.settings.topics(t.name) for t in EVENT_TOPICS]
        async for records in read_from_start(self.where.settings, topics):
            for record in records:
                if record.key == self.customer.account_id.encode():
                    kind = (type_header(record) or b"?").decode()
                    counts.setdefault(record.topic.removeprefix(self.where.settings.topic_prefix), Counter())[kind] += 1
        for topic in sorted(counts):
            Progress.say(f"{topic}: " + ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts[topic].items())))
        took = time.monotonic() - self.progress.started
        Progress.say(f"\nDone in {took:.0f} s. The messages are in the mailbox {self.where.mailbox}.")


def percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.2%}"


def dsn(message: EmailMessage) -> bytes:
    """What a receiving server mails back for a message whose address does not exist (RFC 3464)."""
    return _report("delivery-status", str(message["X-MailFrom"]), "Undelivered Mail Returned to Sender",
                   "Your message could not be delivered: the address does not exist.",
                   "message/delivery-status",
                   "Reporting-MTA: dns; mx.receiver.example\r\n\r\n"
                   f"Final-Recipient: rfc822; {message['X-RcptTo']}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                   "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n", message)


def arf(message: EmailMessage) -> bytes:
    """What a mailbox provider's feedback loop mails when its user presses 'this is spam' (RFC 5965)."""
    return _report("feedback-report", "fbl@receiver.example", "Abuse report",
                   "This is an email abuse report for a message received from your platform.",
                   "message/feedback-report", "Feedback-Type: abuse\r\nUser-Agent: ReceiverFBL/1.0\r\nVersion: 1\r\n",
                   message)


def _report(report_type: str, to: str, subject: str, text: str, machine_type: str, machine: str,
            original: EmailMessage) -> bytes:
    """A multipart/report: the human part, the machine-readable part, the original message's headers."""
    headers = "".join(f"{name}: {value}\r\n" for name, value in original.items() if not name.startswith("X-"))
    return (f"From: MAILER-DAEMON@mx.receiver.example\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={report_type}; boundary="R"\r\n\r\n'
            f"--R\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
            f"--R\r\nContent-Type: {machine_type}\r\n\r\n{machine}\r\n"
            f"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n--R--\r\n").encode()


async def main(rows: int) -> int:
    try:
        where = Where.from_environment()
    except DemoFailed as exc:
        Progress.say(f"demo: {exc}")
        return 2
    demo = Demo(where, rows)
    Progress.say(f"Herald demo: run {demo.customer.run} against {', '.join(f'{k} {v}' for k, v in where.urls.items())}")
    try:
        await demo.summary(await demo.run())
    except (DemoFailed, httpx.HTTPError, aiosmtplib.SMTPException, OSError) as exc:
        Progress.say(f"\ndemo failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        await demo.http.aclose()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the consented import (default 2,000)")
    sys.exit(asyncio.run(main(parser.parse_args().rows)))
