"""The page a password-reset link opens: a form for the new password (twice), posted back as a form and answered
with a plain page saying it is done, or why not. No script; every value escaped. API clients use
POST /v1/password-resets/{id}/completion instead."""

from __future__ import annotations

import re
from html import escape
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from herald_shared.http import html_security_headers
from herald_shared.password_reset import PAGE_PATH
from herald_shared.rules import RuleRefused

from .api import client_of
from .domain import PASSWORD_MAX, PASSWORD_MIN
from .handlers import BillingService, TooManyAttempts

STYLE = ("body{font-family:sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}label{display:block;"
         "margin:.8rem 0 .2rem}input{width:100%;padding:.4rem}button{margin-top:1rem;padding:.5rem 1rem}")
PAGE_HEADERS = {**html_security_headers(STYLE, forms=True), "Cache-Control": "no-store"}
LINK_PART = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")  # what a request id or token of ours can be
LinkPart = Annotated[str, Query(max_length=200)]


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body><main><h1>{escape(title)}</h1>
{body}
</main></body></html>""", status_code=status, headers=PAGE_HEADERS)


def form(request_id: str, token: str, problem: str | None = None, status: int = 200) -> HTMLResponse:
    said = f"<p><strong>{escape(problem)}</strong></p>" if problem else ""
    return page("Set a new password", f"""{said}<form method="post" action="{PAGE_PATH}">
<input type="hidden" name="request" value="{escape(request_id)}">
<input type="hidden" name="token" value="{escape(token)}">
<label for="p1">New password ({PASSWORD_MIN} to {PASSWORD_MAX} characters, not containing your username)</label>
<input id="p1" type="password" name="new_password" autocomplete="new-password" required minlength="{PASSWORD_MIN}"
 maxlength="{PASSWORD_MAX}">
<label for="p2">The same again</label>
<input id="p2" type="password" name="new_password_again" autocomplete="new-password" required
 minlength="{PASSWORD_MIN}" maxlength="{PASSWORD_MAX}">
<button type="submit">Set the password</button>
</form>""", status)


def not_a_link() -> HTMLResponse:
    return page("Link not valid", "<p>This link is not complete. Open it as it is in the email, or ask for a new "
                                  "one.</p>", 404)


def build_reset_page(service: BillingService) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get(PAGE_PATH)
    async def reset_form(request: LinkPart = "", token: LinkPart = "") -> HTMLResponse:
        # The token is checked when the form is posted: a look at the page changes nothing (mail scanners open
        # links), and a wrong token is counted once, there.
        if not LINK_PART.fullmatch(request) or not LINK_PART.fullmatch(token):
            return not_a_link()
        return form(request, token)

    @router.post(PAGE_PATH)
    async def reset_submit(request: Request) -> HTMLResponse:
        fields = await request.form()
        values = {name: fields.get(name) for name in ("request", "token", "new_password", "new_password_again")}
        request_id, token, new, again = (v if isinstance(v, str) else "" for v in values.values())
        if not LINK_PART.fullmatch(request_id) or not LINK_PART.fullmatch(token):
            return not_a_link()
        if new != again:
            return form(request_id, token, "The two passwords are not the same.", 422)
        try:
            await service.complete_password_reset(request_id, token, new, client_of(request))
        except TooManyAttempts as exc:
            response = page("Too many attempts", f"<p>{escape(str(exc))}.</p>", 429)
            response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
            return response
        except RuleRefused as exc:
            if exc.code == "weak_password":
                return form(request_id, token, exc.detail, 422)
            return page("Password not changed", f"<p>{escape(exc.detail)}.</p>", exc.http_status)
        return page("Password changed", "<p>Your password was changed, and every session you had open has ended. "
                                        "Log in with the new password.</p>")

    return router
