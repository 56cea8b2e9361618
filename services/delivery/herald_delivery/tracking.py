"""Tracking endpoints: the open pixel (MessageOpened) and click redirects (LinkClicked).

A click token names the campaign's link by index, never a URL: the redirect goes only to a URL that is
in the campaign's content, so the endpoint can't be used as an open redirect. A hit a mail scanner made
(`domain.automated_reason`) gets the same image or redirect; only its event is marked `automated`.
"""

from __future__ import annotations

import base64
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from ua_parser import parse as parse_user_agent

from herald_shared.contract.delivery import LinkClicked, MessageOpened
from herald_shared.http import client_host, html_security_headers
from herald_shared.kafka import TRANSIENT_ERRORS, EventPublisher

from . import domain, metrics
from .geoip import NOWHERE, GeoLocator, Place
from .render import MessageTokens
from .store import DeliveryStore

log = logging.getLogger(__name__)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
Device = Literal["desktop", "mobile", "tablet", "bot", "other"]


def client_context(ip: str | None, user_agent: str | None, place: Place = NOWHERE) -> dict[str, Any]:
    """IP, where it is (`geoip`), user agent, and the device and browser read from it (ua-parser)."""
    context: dict[str, Any] = {"ip": ip, "user_agent": (user_agent or None) and user_agent[:1000],
                               "country": place.country, "city": place.city}
    if not user_agent:
        return context
    result = parse_user_agent(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    device_family = (result.device.family if result.device else "") or ""
    os_family = (result.os.family if result.os else "") or ""
    device: Device
    if device_family == "Spider":
        device = "bot"
    elif "ipad" in device_family.lower() or "tablet" in device_family.lower() or "Tablet" in user_agent:
        device = "tablet"
    elif os_family in ("iOS", "Android") or "Mobile" in user_agent:
        device = "mobile"
    elif os_family in ("Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "Fedora") or browser:
        device = "desktop"
    else:
        device = "other"
    context.update(device=device, browser=(browser or None) and browser[:100])
    return context


def engagement(ip: str | None, user_agent: str | None, place: Place = NOWHERE) -> dict[str, Any]:
    """The payload fields of an open or click besides its message: the client, and the machine mark."""
    reason = domain.automated_reason(user_agent)
    return {"client": client_context(ip, user_agent, place), "automated": reason is not None,
            "automated_reason": reason}


def build_tracking(tokens: MessageTokens, store: DeliveryStore, publisher: EventPublisher,
                   places: GeoLocator | None = None) -> APIRouter:
    router = APIRouter(tags=["tracking"])
    geo = places or GeoLocator()

    def ref(claim: dict[str, Any]) -> dict[str, Any]:
        return {"message_id": claim["m"], "kind": "campaign", "campaign_id": claim.get("c"),
                "subscriber_id": claim.get("s")}

    def hit(request: Request) -> dict[str, Any]:
        ip = client_host(request)
        return engagement(ip, request.headers.get("user-agent"), geo.locate(ip))

    async def record(kind: str, event: MessageOpened | LinkClicked) -> None:
        """The reader always gets the image or the redirect; a hit that cannot be published is logged and
        counted (engagement is statistics, not worth a broken email)."""
        try:
            await publisher.publish(event)
        except TRANSIENT_ERRORS:
            log.exception("tracking hit not recorded", extra={"kind": kind})
            metrics.TRACKING.labels(kind, "not_recorded").inc()
            return
        metrics.TRACKING.labels(kind, "recorded_automated" if event.payload.automated else "recorded").inc()

    @router.get("/t/o/{token}", response_class=Response, responses={
        200: {"description": "The 1x1 GIF, always (an unreadable token is counted, not recorded).",
              "content": {"image/gif": {"schema": {"type": "string", "format": "binary"}}}}})
    async def opened(token: str, request: Request) -> Response:
        """The open pixel of a campaign message: records MessageOpened for a valid token."""
        claim = tokens.read_tracking(token)
        # The image is always served: a broken image is worse for the reader than an unrecorded open.
        if claim is None or not isinstance(claim.get("m"), str) or not isinstance(claim.get("a"), str):
            metrics.TRACKING.labels("open", "invalid").inc()
        else:
            await record("open", MessageOpened(
                account_id=claim["a"], producer="delivery",
                payload={**ref(claim), **hit(request)}))
        return Response(PIXEL, media_type="image/gif",
                        headers={"Cache-Control": "no-store, no-cache, must-revalidate, private"})

    @router.get("/t/c/{token}", status_code=302, response_class=Response, responses={
        302: {"description": "To the campaign's link the token names (LinkClicked recorded).",
              "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
        404: {"description": "The token is damaged or forged, or names no link of the campaign: an HTML page "
                             "for the reader.", "content": {"text/html": {"schema": {"type": "string"}}}}})
    async def clicked(token: str, request: Request) -> Response:
        """A tracked link of a campaign message: redirects only to a URL in the campaign's content."""
        claim = tokens.read_tracking(token)
        if claim is None or not isinstance(claim.get("i"), int) or not isinstance(claim.get("a"), str):
            metrics.TRACKING.labels("click", "invalid").inc()
            return _not_found()
        campaign = await store.campaign(claim["a"], str(claim.get("c")))
        links = (campaign or {}).get("links") or []
        index = claim["i"]
        if not 0 <= index < len(links):
            metrics.TRACKING.labels("click", "unknown_link").inc()
            return _not_found()
        url = links[index]
        try:
            clicked = LinkClicked(account_id=claim["a"], producer="delivery",
                                  payload={**ref(claim), "url": url, "link_index": index, **hit(request)})
        except ValidationError as exc:  # a link the campaign holds but the contract cannot (a port of 84430)
            log.warning("a click on a link that is not a valid URL is not recorded", extra={
                "link_index": index, "error": exc.errors()[0]["msg"]})
            metrics.TRACKING.labels("click", "invalid_url").inc()
        else:
            await record("click", clicked)
        return RedirectResponse(url, status_code=302)

    return router


def _not_found() -> HTMLResponse:
    return HTMLResponse("<!doctype html><html lang=en><title>Link not valid</title><main><h1>This link is not "
                        "valid</h1><p>It may have been damaged when it was copied.</p></main></html>",
                        status_code=404, headers=html_security_headers())
