"""The links of a campaign that delivery tracks: campaigns checks them when a campaign is submitted, delivery
rewrites them into click tokens when it renders. One definition for both, so a link campaigns accepts is one
delivery can track and record. The HTML part's links are the campaign's links; the text part carries them as
`label <URL>` (`text_link`, what campaigns writes when it derives the text part), and a URL so written that is
one of the HTML part's links is tracked as that link (`text_links`), so a click from either part counts for it."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

# An http(s) link of an <a href>; a URL with a merge tag in it (`{` or `}`) is personalised: untracked.
HTML_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s<>{}]+)\2""", re.IGNORECASE)
_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)  # what LinkClicked records
# The most tracked links an HTML part may hold: campaigns refuses more (422 too_many_links) when a draft is saved
# and when it is submitted. Delivery rewrites every tracked link of every message into a click token, ~17 us a
# link on one core: 10,000 links take 205 ms a message (5.7 hours of the one sender's CPU for 100,000 members,
# while every other account waits) and past ~45,000 the output passes the renderer's 2,000,000 characters. Real
# newsletters hold 20 to 100; 250 leaves a long digest or catalogue room and keeps rewriting near 4 ms a message.
MAX_TRACKED_LINKS = 250
# A link of the text part: a URL between angle brackets, the form RFC 3986 (appendix C) gives for URLs in plain
# text. Template code is matched first, so a URL written inside it (`{{ "<https://...>" }}`) is left alone.
_TEXT_LINK = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})|<(https?://[^\s<>{}]+)>", re.DOTALL | re.IGNORECASE)


def tracked_links(html_body: str | None) -> list[str]:
    """The URLs of a campaign's HTML links, in order; a click token names one by index (no open redirect)."""
    if not html_body:
        return []
    return [html.unescape(match.group(3)) for match in HTML_LINK.finditer(html_body)]


def broken_links(html_body: str | None) -> list[tuple[str, str]]:
    """(link, why) for each tracked link that is no valid URL (a port of 84430, an empty host): a reader could
    not follow it, and its clicks could not be recorded."""
    broken = []
    for url in tracked_links(html_body):
        try:
            _URL.validate_python(url)
        except ValidationError as exc:
            broken.append((url, str(exc.errors()[0]["msg"])))
    return broken


def text_link(url: str) -> str:
    """A link's target as the text part writes it, after the link's label: `<url>`."""
    return f"<{url}>"


def text_links(text_body: str, links: Sequence[str]) -> list[tuple[int, int, int]]:
    """(start, end, link index) of each URL of the text part written as `<URL>` (`text_link`) that is one of
    the HTML part's tracked `links`: the n-th such URL is the HTML's n-th link to it (a URL linked twice keeps
    both indexes, in order), or its first when the text holds more of them. Other URLs are left as written."""
    indexes: dict[str, list[int]] = {}
    for index, url in enumerate(links):
        indexes.setdefault(url, []).append(index)
    seen: dict[str, int] = {}
    found = []
    for match in _TEXT_LINK.finditer(text_body):
        url = match.group(2)
        if url is None or url not in indexes:
            continue
        nth = seen.get(url, 0)
        seen[url] = nth + 1
        of_url = indexes[url]
        found.append((match.start(2), match.end(2), of_url[nth] if nth < len(of_url) else of_url[0]))
    return found
