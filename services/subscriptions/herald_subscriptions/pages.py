"""Hosted pages, server-rendered, plain and accessible: subscribe form, check your inbox, confirmation,
unsubscribe (RFC 8058 one-click POST and a page with a button), preferences.

Every form carries a signed token of its own path, and a post without one, or sent from another site's page, is
refused (CSRF; the one-click POST is exempt, as RFC 8058 has mail providers send it). The subscribe form also
has a honeypot field, a minimum fill time, rate limits per client and per address, and the proof-of-work
challenge a list can switch on (`forms.py`, `domain.screen_form`; SECURITY.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from math import ceil
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from herald_shared.contract.envelope import Identifier
from herald_shared.contract.subscriptions import RecipientOptedOutOfTests, RecipientOptedOutOfTestsPayload
from herald_shared.http import client_host
from herald_shared.links import ConfirmClaim, LinkExpired, LinkInvalid, UnsubscribeClaim
from herald_shared.request_fields import is_ip_address

from . import domain, metrics
from .domain import SubscribeRequest, SubscriptionError
from .forms import (
    CHALLENGE_SCRIPT,
    STYLE,
    FormTokens,
    Limits,
    ProofOfWork,
    Quota,
    cross_site,
    own_origin,
    page_headers,
)
from .handlers import SubscriptionsService

CHALLENGE_PATH = "/assets/form-challenge.js"
# A signed link's token in a page's path (a few hundred characters; longer is no token of ours: 422).
LinkToken = Annotated[str, Path(max_length=1000)]


def page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style></head>
<body><main><h1>{escape(title)}</h1>
{body}
</main></body></html>""", status_code=status, headers=headers or page_headers())


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


class FormGuard:
    """The hosted forms' defences, as one object the routes ask (`forms.py` has the parts)."""

    def __init__(self, secret: str, public_url: str, limits: Limits) -> None:
        self.tokens = FormTokens(secret)
        self.limits = limits
        self.per_ip = Quota(limits.posts_per_ip, limits.window)
        self.per_address = Quota(limits.posts_per_address, limits.window)
        self.proof_of_work = ProofOfWork(secret)
        self.origin = own_origin(public_url)

    def token_field(self, action: str) -> str:
        return f'<input type="hidden" name="form_token" value="{escape(self.tokens.issue(action))}">'

    def screen(self, request: Request, form: FormData, *, subscribe: bool = False,
               challenge: bool = False) -> domain.FormVerdict:
        action = request.url.path
        origins = {self.origin, own_origin(str(request.base_url))}
        return domain.screen_form(
            cross_site=cross_site(request.headers, origins),
            served_at=self.tokens.served_at(action, _text(form, "form_token")), now=datetime.now(UTC),
            honeypot=_text(form, "website") if subscribe else "",
            min_fill=self.limits.min_fill if subscribe else None,
            challenge_passed=self.proof_of_work.passed(_text(form, "challenge"), _text(form, "challenge_nonce"))
            if challenge else None)


def _forged(verdict: str) -> HTMLResponse:
    metrics.REFUSED.labels(verdict).inc()
    return page("Please send the form again", "<p>This form has expired or was not sent from this site. Reload the "
                "page and send it again.</p>", 403)


def _too_many(reason: str, wait: float) -> HTMLResponse:
    metrics.REFUSED.labels(reason).inc()
    return page("Too many attempts", "<p>Please wait a few minutes and try again.</p>", 429,
                {**page_headers(), "Retry-After": str(max(1, ceil(wait)))})


# What the subscribe form tells a person when a rule refuses the post: the API's messages (the address rules'
# wording, the field names) are for developers. Other refusals cannot come from the form's fields as served.
FORM_REFUSALS = {
    "invalid_email": "Please enter a valid email address, like name@example.com.",
    "invalid_text": "Please check what you entered: one of the fields holds a character we cannot take.",
    "list_not_found": "This subscription form does not exist any more.",
}
FORM_REFUSED = "We could not take this subscription. Please check what you entered and try again."


def form_refusal(refused: SubscriptionError) -> str:
    """The subscribe form's words for a refused post (`FORM_REFUSALS`), never the API's detail."""
    return FORM_REFUSALS.get(refused.code, FORM_REFUSED)


# Delivery's test messages (render.test_message) carry an unsubscribe link marked a test's, naming no subscriber;
# since RecipientOptedOutOfTests, also the hash of the address it went to, so the link stops that sender's tests.
TEST_MESSAGE = "This was a test message: its link belongs to no subscription, so no subscription changed."
NO_MORE_TESTS = "You will get no more test messages from this sender."


def _test_message() -> HTMLResponse:
    return page("This was a test message", "<p>The sender sent you this email to test a campaign before sending "
                "it. Its unsubscribe link belongs to no subscription, so no subscription changed. To stop a list's "
                "emails, use the link in an email of that list.</p>")


def _no_more_tests() -> HTMLResponse:
    return page("No more test messages", f"<p>{NO_MORE_TESTS} This was a test message: it belongs to no "
                "subscription, so no subscription changed.</p>")


def _test_opt_out(claim: UnsubscribeClaim, recipient_sha256: str, one_click: bool) -> RecipientOptedOutOfTests:
    return RecipientOptedOutOfTests(account_id=claim.account_id, producer=domain.PRODUCER,
                                    payload=RecipientOptedOutOfTestsPayload(
                                        email_sha256=recipient_sha256,
                                        source="one_click" if one_click else "unsubscribe_page",
                                        campaign_id=claim.campaign_id, message_id=claim.message_id))


def _check_inbox() -> HTMLResponse:
    return page("Check your inbox", "<p>We sent you an email with a link. Open it to confirm your subscription; "
                                    "until then you will receive nothing.</p>")


def build_pages(service: SubscriptionsService, guard: FormGuard) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(CHALLENGE_PATH)
    async def challenge_script() -> Response:
        return Response(CHALLENGE_SCRIPT, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    def form_headers(lst: domain.ListState) -> dict[str, str]:
        return page_headers(lst.frame_ancestors, script=_challenged(lst))

    def not_found() -> HTMLResponse:
        return page("List not found", "<p>This subscription form does not exist any more.</p>", 404)

    async def form_list(account_id: str, list_id: str) -> domain.ListState | None:
        """The list whose form this is, if it takes people (`domain.takes_members`: not one deleted, nor one of
        a deleted account)."""
        lst = await service.store.list_state(account_id, list_id)
        return lst if domain.takes_members(lst) else None

    @router.get("/subscribe/{account_id}/{list_id}")
    async def subscribe_form(account_id: Identifier, list_id: Identifier, request: Request) -> HTMLResponse:
        lst = await form_list(account_id, list_id)
        if lst is None:
            return not_found()
        challenge = ""
        if _challenged(lst):
            challenge = guard.proof_of_work.fields() + f'<script src="{CHALLENGE_PATH}" defer></script>'
        return page(f"Subscribe to {lst.name}", f"""
<form method="post"{' data-challenge' if challenge else ''}>
  {guard.token_field(request.url.path)}{challenge}
  <label for="email">Email address</label>
  <input id="email" name="email" type="email" required autocomplete="email">
  <label for="first_name">First name (optional)</label>
  <input id="first_name" name="first_name" autocomplete="given-name">
  <div class="hp" aria-hidden="true"><label for="website">Leave this empty</label>
  <input id="website" name="website" tabindex="-1" autocomplete="off"></div>
  <p><label><input type="checkbox" name="consent" value="yes" required>
  I want to receive emails from {escape(lst.name)}.</label></p>
  <button type="submit">Subscribe</button>
</form>""", headers=form_headers(lst))

    @router.post("/subscribe/{account_id}/{list_id}")
    async def subscribe_submit(account_id: Identifier, list_id: Identifier, request: Request) -> HTMLResponse:
        lst = await form_list(account_id, list_id)
        if lst is None:
            return not_found()
        response = await subscribe_post(account_id, list_id, request, lst)
        # Whatever the answer, it shows where the form was: framed by a site the list allows.
        for name, value in form_headers(lst).items():
            response.headers[name] = value
        if "X-Frame-Options" not in form_headers(lst):
            del response.headers["X-Frame-Options"]
        return response

    async def subscribe_post(account_id: str, list_id: str, request: Request, lst: domain.ListState) -> HTMLResponse:
        form = await request.form()
        verdict = guard.screen(request, form, subscribe=True, challenge=_challenged(lst))
        if verdict in ("cross_site", "no_token"):
            return _forged(verdict)
        now = datetime.now(UTC)
        client = client_host(request) or ""
        if wait := guard.per_ip.take(client, now):
            return _too_many("ip_rate", wait)
        if verdict in domain.SILENT_VERDICTS:
            metrics.REFUSED.labels(verdict).inc()
            return _check_inbox()
        if verdict == "challenge":
            metrics.REFUSED.labels(verdict).inc()
            return page("Please try again", "<p>The page could not check that a person sent it. Allow its script "
                        "to run, reload the page and send it again.</p>", 422)
        email, first_name = _text(form, "email"), _text(form, "first_name").strip() or None
        if form.get("consent") != "yes":
            return page("Please confirm", "<p>Tick the box to say you want to receive these emails.</p>", 422)
        try:
            address = domain.email_sha256(domain.normalise_email(email))
        except SubscriptionError as exc:
            return page("Something is not right", f"<p>{escape(form_refusal(exc))}</p>", 422)
        if wait := guard.per_address.take(f"{account_id}\0{address}", now):
            return _too_many("address_rate", wait)
        try:
            consent = domain.consent_evidence(source="form", collected_at=datetime.now(UTC),
                                      method=f"Herald hosted subscribe form of list '{lst.name}'"[:1000],
                                      ip=client if is_ip_address(client) else None,
                                      user_agent=(request.headers.get("user-agent") or "")[:1000] or None)
            decision, _ = await service.subscribe(account_id, list_id, SubscribeRequest(
                email=email, consent=consent, channel="form", first_name=first_name))
        except SubscriptionError as exc:
            return page("Something is not right", f"<p>{escape(form_refusal(exc))}</p>", 422)
        except ValidationError:
            return page("Something is not right", "<p>One of the fields is too long.</p>", 422)
        if decision.outcome == "already_active":
            return page("You are already subscribed", "<p>Nothing else to do.</p>")
        if decision.outcome == "active":
            return page("You are subscribed", "<p>Thank you.</p>")
        return _check_inbox()  # a confirmation held back by the daily caps reads the same

    def _confirm_claim(token: str) -> ConfirmClaim | HTMLResponse:
        try:
            return service.links.read_confirm(token)
        except LinkExpired:
            return page("This link has expired", "<p>Please subscribe again to get a new link.</p>", 410)
        except LinkInvalid:
            return page("This link is not valid", "<p>Check that you opened the whole link from the email.</p>",
                        400)

    @router.get("/confirm/{token}")
    async def confirm_page(token: LinkToken) -> HTMLResponse:
        """Opening the link changes nothing: mail scanners open links too. The person presses the button."""
        claim = _confirm_claim(token)
        if isinstance(claim, HTMLResponse):
            return claim
        return page("Confirm your subscription", f"""<p>Press the button to start receiving these emails.</p>
<form method="post">{guard.token_field(f"/confirm/{token}")}
<button type="submit">Confirm subscription</button></form>""")

    @router.post("/confirm/{token}")
    async def confirm(token: LinkToken, request: Request) -> HTMLResponse:
        claim = _confirm_claim(token)
        if isinstance(claim, HTMLResponse):
            return claim
        verdict = guard.screen(request, await request.form())
        if verdict != "accept":
            return _forged(verdict)
        try:
            outcome = await service.confirm(claim.account_id, claim.subscriber_id,
                                            client_host(request))
        except SubscriptionError as exc:
            member = await service.store.member_state(claim.account_id, claim.subscriber_id)
            if member is not None and member.status == "unsubscribed":
                # Both audience folds take a confirmation after an unsubscribe as a race and ignore it, so the
                # "do not subscribe me" of the confirmation email's List-Unsubscribe ends its confirm link too.
                return page("This link is no longer valid", "<p>You asked not to be subscribed, or unsubscribed, "
                            "with this address. To subscribe, use the list's subscribe form again.</p>", 410)
            return page("This link is no longer valid", f"<p>{escape(exc.detail)}.</p>", 410)
        if outcome == "already_confirmed":
            return page("Already confirmed", "<p>Your subscription was confirmed before. Nothing changed.</p>")
        return page("Subscription confirmed", "<p>Thank you, you are subscribed.</p>")

    @router.get("/unsubscribe/{token}")
    async def unsubscribe_page(token: LinkToken) -> HTMLResponse:
        try:
            claim = service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return page("This link is not valid", "<p>Check that you opened the whole link from the email.</p>",
                        400)
        if claim.test:
            if claim.recipient_sha256 is None:  # a test link written before it named its recipient
                return _test_message()
            return page("This was a test message", f"""<p>The sender sent you this email to test a campaign before
sending it. It belongs to no subscription. Do you want to stop test messages from this sender?</p>
<form method="post">{guard.token_field(f"/unsubscribe/{token}")}
<button type="submit" name="confirm" value="yes">Stop test messages</button></form>""")
        pending = await _pending_list(claim)
        if pending is not None:
            return page("You are not subscribed", f"""<p>Someone asked to subscribe this address to
{escape(pending)}, and it is waiting for a confirmation. If you did not ask for it, you will not be subscribed
unless you confirm. Do you want us to record that you do not want these emails?</p>
<form method="post">{guard.token_field(f"/unsubscribe/{token}")}
<button type="submit" name="confirm" value="yes">Do not subscribe me</button></form>""")
        return page("Unsubscribe", f"""<p>Do you want to stop receiving these emails?</p>
<form method="post">{guard.token_field(f"/unsubscribe/{token}")}
<button type="submit" name="confirm" value="yes">Unsubscribe</button></form>
<p><a href="/preferences/{escape(token)}">Choose which lists you stay on</a></p>""")

    async def _pending_list(claim: UnsubscribeClaim) -> str | None:
        """The list's name when the link's membership is pending (a confirmation email's List-Unsubscribe: the
        person never confirmed), for the page's wording; None otherwise."""
        member = await service.store.member_state(claim.account_id, claim.subscriber_id)
        if member is None or member.status != "pending":
            return None
        lst = await service.store.list_doc(claim.account_id, member.list_id)
        return str(lst["name"]) if lst is not None else "this list"

    @router.post("/unsubscribe/{token}")
    async def unsubscribe(token: LinkToken, request: Request) -> Response:
        """RFC 8058: a POST with `List-Unsubscribe=One-Click` unsubscribes at once, no login, no page, and no
        form token (mail providers send it from their servers). It acts only on the subscriber the signed link
        names, and twice is the same as once. The page's own button needs the page's token."""
        try:
            claim = service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return PlainTextResponse("This unsubscribe link is not valid.", status_code=400)
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        if claim.test:
            # No subscriber is unsubscribed. A link naming its recipient records that this address wants no more
            # tests from the account (campaigns refuses them); twice is the same as once.
            if claim.recipient_sha256 is None:
                return PlainTextResponse(TEST_MESSAGE) if one_click else _test_message()
            if not one_click and (verdict := guard.screen(request, form)) != "accept":
                return _forged(verdict)
            await service.publish_only([_test_opt_out(claim, claim.recipient_sha256, one_click)])
            return PlainTextResponse(NO_MORE_TESTS) if one_click else _no_more_tests()
        if not one_click and (verdict := guard.screen(request, form)) != "accept":
            return _forged(verdict)
        # A pending membership (the link of a confirmation email) is unsubscribed as an active one is: an opt-out
        # the customer cannot undo, which only the person's own double opt-in through the form ends.
        pending = None if one_click else await _pending_list(claim)
        try:
            await service.unsubscribe(claim.account_id, claim.subscriber_id,
                                      "one_click" if one_click else "unsubscribe_page",
                                      claim.campaign_id, claim.message_id)
        except SubscriptionError:
            pass  # erased or unknown: nobody to unsubscribe, and the answer must not tell who exists
        if one_click:
            return PlainTextResponse("Unsubscribed.")
        if pending is not None:
            return page("You will not be subscribed", f"<p>You will not be subscribed to {escape(pending)}. The "
                        "sender cannot add this address again; only you can, by subscribing and confirming.</p>")
        return page("You are unsubscribed", "<p>You will not receive these emails any more.</p>")

    @router.get("/preferences/{token}")
    async def preferences(token: LinkToken) -> HTMLResponse:
        return await _preferences(token, None)

    @router.post("/preferences/{token}")
    async def preferences_submit(token: LinkToken, request: Request) -> HTMLResponse:
        form = await request.form()
        try:
            service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return await _preferences(token, None)  # the same "not valid" page
        if (verdict := guard.screen(request, form)) != "accept":
            return _forged(verdict)
        return await _preferences(token, _text(form, "list_id"))

    async def _preferences(token: str, leave_list: str | None) -> HTMLResponse:
        """The lists this address is on in the account that sent the message; leave any of them."""
        try:
            claim = service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return page("This link is not valid", "<p>Check that you opened the whole link from the email.</p>",
                        400)
        member = await service.store.member(claim.account_id, claim.subscriber_id)
        if member is None or member["status"] == "erased":
            return page("Nothing to manage", "<p>We hold no subscriptions for this link.</p>", 404)
        memberships = await service.store.members_by_hash(claim.account_id, member["email_sha256"])
        note = ""
        if leave_list:
            target = next((m for m in memberships if m.get("list_id") == leave_list), None)
            left = await service.store.list_doc(claim.account_id, leave_list)
            if target is not None and left is not None:
                await service.unsubscribe(claim.account_id, target["subscriber_id"], "preference_page",
                                          claim.campaign_id, claim.message_id)
                note = f"<p role=\"status\">Done: you left {escape(left['name'])}.</p>"
                memberships = await service.store.members_by_hash(claim.account_id, member["email_sha256"])
        rows = []
        for m in memberships:
            lst = await service.store.list_doc(claim.account_id, m.get("list_id", ""))
            if lst is None or m["status"] not in ("pending", "active"):
                continue
            rows.append(f"""<li>{escape(lst['name'])}
  <form method="post" class="inline">{guard.token_field(f"/preferences/{token}")}
  <input type="hidden" name="list_id" value="{escape(lst['list_id'])}">
  <button type="submit">Leave {escape(lst['name'])}</button></form></li>""")
        body = f"<ul>{''.join(rows)}</ul>" if rows else "<p>You are not on any list.</p>"
        return page("Your subscriptions", note + body)

    return router


def _challenged(lst: domain.ListState) -> bool:
    return lst.form_challenge == "proof_of_work"
