"""Which tracking hits a machine made (issue 20, "Tracking"): mail scanners are marked, readers never are."""

from __future__ import annotations

import pytest

from herald_delivery import domain
from herald_delivery.tracking import engagement
from herald_shared.contract.delivery import MessageOpened

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")
DESKTOP_CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/131.0.0.0 Safari/537.36")
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17928; Pro)"
APPLE_MAIL = "Mozilla/5.0"  # what Apple Mail (and its privacy proxy) sends: nothing tells the two apart


@pytest.mark.parametrize(("user_agent", "reason"), [
    ("Barracuda Sentinel (EE)", "scanner:barracuda"),
    ("Mozilla/5.0 (compatible; Barracuda Link Protection)", "scanner:barracuda"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Mimecast URL Protect", "scanner:mimecast"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; Proofpoint URL Defense)", "scanner:proofpoint"),
    ("Symantec Email Security.cloud link follower", "scanner:symantec"),
    (DESKTOP_CHROME + " BingPreview/1.0b", "scanner:bingpreview"),
])
def test_a_known_mail_scanner_is_marked_by_its_name_in_the_user_agent(user_agent: str, reason: str) -> None:
    assert domain.automated_reason(user_agent) == reason
    assert domain.automated_reason(user_agent.upper()) == reason  # names are matched whatever their case


@pytest.mark.parametrize("user_agent", [None, "", "   "])
def test_a_hit_without_a_user_agent_is_marked(user_agent: str | None) -> None:
    """Every browser and mail client sends a user agent; a hit without one is a script's or a scanner's."""
    assert domain.automated_reason(user_agent) == "no_user_agent"


@pytest.mark.parametrize("user_agent", [IPHONE, DESKTOP_CHROME, OUTLOOK, APPLE_MAIL, GMAIL_PROXY, YAHOO_PROXY])
def test_readers_and_the_image_proxies_that_fetch_for_them_are_not_marked(user_agent: str) -> None:
    """Gmail's and Yahoo's image proxies load the pixel when the reader opens the message: a person's open."""
    assert domain.automated_reason(user_agent) is None


def test_an_open_carries_the_mark_and_a_readers_open_still_parses_as_before() -> None:
    scanner = engagement("203.0.113.5", "Barracuda Sentinel (EE)")
    reader = engagement("198.51.100.9", IPHONE)
    assert (scanner["automated"], scanner["automated_reason"]) == (True, "scanner:barracuda")
    assert (reader["automated"], reader["automated_reason"]) == (False, None)
    assert reader["client"]["device"] == "mobile"
    ref = {"message_id": "m1", "campaign_id": "c1", "subscriber_id": "s1"}
    event = MessageOpened(account_id="acme", producer="delivery", payload={**ref, **scanner})
    assert event.payload.automated and event.payload.automated_reason == "scanner:barracuda"
    # An event from before the mark existed (no `automated`) reads as a reader's.
    old = MessageOpened.model_validate({"account_id": "acme", "producer": "delivery", "type": "MessageOpened",
                                        "payload": {**ref, "client": {"ip": "198.51.100.9"}}})
    assert old.payload.automated is False and old.payload.automated_reason is None
