"""Hosted pages, server-rendered, plain and accessible: subscribe form, check your inbox, confirmation,
unsubscribe (RFC 8058 one-click POST and a page with a button)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from pydantic import ValidationError

from herald_shared.contract.subscriptions import ConsentEvidence
from herald_shared.links import ConfirmClaim, LinkExpired, LinkInvalid

from .domain import SubscribeRequest, SubscriptionError
from .handlers import SubscriptionsService


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1a1a}}
label{{display:block;margin-top:1rem}}input{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}}
button{{font:inherit;margin-top:1.5rem;padding:.5rem 1.2rem}}</style></head>
<body><main><h1>{escape(title)}</h1>
{body}
</main></body></html>""", status_code=status, headers={"Cache-Control": "no-store"})


def build_pages(service: SubscriptionsService) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/subscribe/{account_id}/{list_id}")
    async def subscribe_form(account_id: str, list_id: str) -> HTMLResponse:
        doc = await service.store.list_doc(account_id, list_id)
        if doc is None:
            return page("List not found", "<p>This subscription form does not exist any more.</p>", 404)
        return page(f"Subscribe to {doc['name']}", f"""
<form method="post">
  <label for="email">Email address</label>
  <input id="email" name="email" type="email" required autocomplete="email">
  <label for="first_name">First name (optional)</label>
  <input id="first_name" name="first_name" autocomplete="given-name">
  <p><label><input type="checkbox" name="consent" value="yes" required style="width:auto">
  I want to receive emails from {escape(doc['name'])}.</label></p>
  <button type="submit">Subscribe</button>
</form>""")

    @router.post("/subscribe/{account_id}/{list_id}")
    async def subscribe_submit(account_id: str, list_id: str, request: Request) -> HTMLResponse:
        form = await request.form()
        email, first_name = str(form.get("email", "")), str(form.get("first_name", "")).strip() or None
        if form.get("consent") != "yes":
            return page("Please confirm", "<p>Tick the box to say you want to receive these emails.</p>", 422)
        doc = await service.store.list_doc(account_id, list_id)
        if doc is None:
            return page("List not found", "<p>This subscription form does not exist any more.</p>", 404)
        try:
            consent = ConsentEvidence(source="form", collected_at=datetime.now(UTC),
                                      method=f"Herald hosted subscribe form of list '{doc['name']}'"[:1000],
                                      ip=request.client.host if request.client else None,
                                      user_agent=(request.headers.get("user-agent") or "")[:1000] or None)
            decision, _ = await service.subscribe(account_id, list_id, SubscribeRequest(
                email=email, consent=consent, channel="form", first_name=first_name))
        except SubscriptionError as exc:
            return page("Something is not right", f"<p>{escape(exc.detail)}</p>", 422)
        except ValidationError:
            return page("Something is not right", "<p>One of the fields is too long.</p>", 422)
        if decision.outcome == "already_active":
            return page("You are already subscribed", "<p>Nothing else to do.</p>")
        if decision.outcome == "active":
            return page("You are subscribed", "<p>Thank you.</p>")
        return page("Check your inbox", "<p>We sent you an email with a link. Open it to confirm your "
                                        "subscription; until then you will receive nothing.</p>")

    def _confirm_claim(token: str) -> ConfirmClaim | HTMLResponse:
        try:
            return service.links.read_confirm(token)
        except LinkExpired:
            return page("This link has expired", "<p>Please subscribe again to get a new link.</p>", 410)
        except LinkInvalid:
            return page("This link is not valid", "<p>Check that you opened the whole link from the email.</p>",
                        400)

    @router.get("/confirm/{token}")
    async def confirm_page(token: str) -> HTMLResponse:
        """Opening the link changes nothing: mail scanners open links too. The person presses the button."""
        claim = _confirm_claim(token)
        if isinstance(claim, HTMLResponse):
            return claim
        return page("Confirm your subscription", """<p>Press the button to start receiving these emails.</p>
<form method="post"><button type="submit">Confirm subscription</button></form>""")

    @router.post("/confirm/{token}")
    async def confirm(token: str, request: Request) -> HTMLResponse:
        claim = _confirm_claim(token)
        if isinstance(claim, HTMLResponse):
            return claim
        try:
            outcome = await service.confirm(claim.account_id, claim.subscriber_id,
                                            request.client.host if request.client else None)
        except SubscriptionError as exc:
            return page("This link is no longer valid", f"<p>{escape(exc.detail)}.</p>", 410)
        if outcome == "already_confirmed":
            return page("Already confirmed", "<p>Your subscription was confirmed before. Nothing changed.</p>")
        return page("Subscription confirmed", "<p>Thank you, you are subscribed.</p>")

    @router.get("/unsubscribe/{token}")
    async def unsubscribe_page(token: str) -> HTMLResponse:
        try:
            service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return page("This link is not valid", "<p>Check that you opened the whole link from the email.</p>",
                        400)
        return page("Unsubscribe", f"""<p>Do you want to stop receiving these emails?</p>
<form method="post"><button type="submit" name="confirm" value="yes">Unsubscribe</button></form>
<p><a href="/preferences/{escape(token)}">Choose which lists you stay on</a></p>""")

    @router.post("/unsubscribe/{token}")
    async def unsubscribe(token: str, request: Request) -> Response:
        """RFC 8058: a POST with `List-Unsubscribe=One-Click` unsubscribes at once, no login, no page."""
        try:
            claim = service.links.read_unsubscribe(token)
        except (LinkInvalid, LinkExpired):
            return PlainTextResponse("This unsubscribe link is not valid.", status_code=400)
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        try:
            await service.unsubscribe(claim.account_id, claim.subscriber_id,
                                      "one_click" if one_click else "unsubscribe_page",
                                      claim.campaign_id, claim.message_id)
        except SubscriptionError:
            pass  # erased or unknown: nobody to unsubscribe, and the answer must not tell who exists
        if one_click:
            return PlainTextResponse("Unsubscribed.")
        return page("You are unsubscribed", "<p>You will not receive these emails any more.</p>")

    @router.get("/preferences/{token}")
    async def preferences(token: str) -> HTMLResponse:
        return await _preferences(token, None)

    @router.post("/preferences/{token}")
    async def preferences_submit(token: str, request: Request) -> HTMLResponse:
        form = await request.form()
        return await _preferences(token, str(form.get("list_id", "")))

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
                await service.unsubscribe(claim.account_id, target["_id"], "preference_page", claim.campaign_id,
                                          claim.message_id)
                note = f"<p role=\"status\">Done: you left {escape(left['name'])}.</p>"
                memberships = await service.store.members_by_hash(claim.account_id, member["email_sha256"])
        rows = []
        for m in memberships:
            lst = await service.store.list_doc(claim.account_id, m.get("list_id", ""))
            if lst is None or m["status"] not in ("pending", "active"):
                continue
            rows.append(f"""<li>{escape(lst['name'])}
  <form method="post" style="display:inline"><input type="hidden" name="list_id" value="{escape(lst['list_id'])}">
  <button type="submit">Leave {escape(lst['name'])}</button></form></li>""")
        body = f"<ul>{''.join(rows)}</ul>" if rows else "<p>You are not on any list.</p>"
        return page("Your subscriptions", note + body)

    return router
