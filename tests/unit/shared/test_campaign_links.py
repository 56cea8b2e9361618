"""The links of a campaign delivery tracks, and where the text part carries them (`herald_shared.campaign_links`)."""

from __future__ import annotations

from herald_shared.campaign_links import text_link, text_links, tracked_links

HTML = ('<a href="https://shop.example/sale?a=1&amp;b=2">Sale</a> <a href="https://acme.example/">Home</a> '
        '<a href="https://shop.example/sale?a=1&amp;b=2">Sale again</a> '
        '<a href="https://acme.example/{{ id }}">You</a>')
LINKS = tracked_links(HTML)


def found(text: str) -> list[tuple[str, int]]:
    return [(text[start:end], index) for start, end, index in text_links(text, LINKS)]


def test_a_text_part_link_written_as_campaigns_writes_it_is_the_html_link_of_that_url() -> None:
    text = (f"Sale {text_link('https://shop.example/sale?a=1&b=2')}\nHome {text_link('https://acme.example/')}\n"
            f"Sale again <https://shop.example/sale?a=1&b=2>")
    assert found(text) == [("https://shop.example/sale?a=1&b=2", 0), ("https://acme.example/", 1),
                           ("https://shop.example/sale?a=1&b=2", 2)]


def test_a_url_linked_more_often_in_the_text_than_in_the_html_counts_for_its_first_link() -> None:
    assert [index for _, index in found("<https://acme.example/> <https://acme.example/>")] == [1, 1]


def test_urls_that_are_no_tracked_link_or_not_between_angle_brackets_are_left_as_written() -> None:
    """Only the form the derived text part uses is tracked: a bare URL, another URL, a personalised one (untracked
    in the HTML too) and a URL inside template code (rewriting it would break the template) stay as written."""
    assert found("https://acme.example/ <https://other.example/> <https://acme.example/{{ id }}> "
                 '{{ "<https://acme.example/>" }} {% set x = "<https://acme.example/>" %} '
                 "{# <https://acme.example/> #} <https://acme.example/x>") == []


def test_a_text_part_has_no_tracked_links_without_html_links() -> None:
    assert text_links("<https://acme.example/>", tracked_links(None)) == []


def test_a_link_whose_scheme_is_not_lower_case_is_tracked_in_the_text_part_as_in_the_html() -> None:
    for scheme in ("HTTPS", "Https", "HTTP"):
        html = f'<p><a href="{scheme}://shop.example/sale">Sale</a></p>'
        links = tracked_links(html)
        text = f"Sale {text_link(f'{scheme}://shop.example/sale')}"
        assert [(text[start:end], index) for start, end, index in text_links(text, links)] == [
            (f"{scheme}://shop.example/sale", 0)]
