"""The links of a campaign that delivery tracks: campaigns checks them when a campaign is submitted, delivery
rewrites them into click tokens when it renders. One definition for both, so a link campaigns accepts is one
delivery can track and record."""

from __future__ import annotations

import html
import re

from pydantic import AnyHttpUrl, TypeAdapter, ValidationError

# An http(s) link of an <a href>; a URL with a merge tag in it (`{` or `}`) is personalised: untracked.
HTML_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"'\s<>{}]+)\2""", re.IGNORECASE)
_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)  # what LinkClicked records


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
