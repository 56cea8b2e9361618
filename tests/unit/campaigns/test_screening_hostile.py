"""Hostile campaign bodies: screening reads a body of any allowed size in time linear in its size, and refuses as
unreadable, with the limit it passed, what no email builder writes (services/campaigns/README.md, "Limits").

No test here times anything: each counts a step of the reading that was repeated for every piece of the body
before (a character of a value, an open element looked at) and checks that twice the body costs about twice the
steps, or checks a limit's refusal and its reason."""

from __future__ import annotations

import re
from typing import Any, SupportsIndex

import pytest

from herald_campaigns import screening
from herald_campaigns.screening import screen

UNREADABLE = "Screening cannot read this body"


def refusals(html_body: str) -> list[str]:
    return [r.reason for r in screen(subject="News", preheader=None, html_body=html_body, text_body="Hi").refusals]


def unreadable(html_body: str) -> list[str]:
    return [reason for reason in refusals(html_body) if reason.startswith(UNREADABLE)]


class CountedStr(str):
    """A string that counts how many times a character or a slice of it is read by Python code."""

    reads = 0

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        CountedStr.reads += 1
        return super().__getitem__(key)


def reads_of_functions(value: str) -> int:
    CountedStr.reads = 0
    list(screening._functions(CountedStr(value)))
    return CountedStr.reads


class CountedStack(list[Any]):
    """The reader's stack of open elements, counting how many times an element of it is looked at."""

    reads = 0

    def __getitem__(self, key: Any) -> Any:
        CountedStack.reads += 1
        return super().__getitem__(key)


def stack_reads(html_body: str) -> int:
    reader = screening._HtmlReader()
    reader.stack = CountedStack()
    CountedStack.reads = 0
    reader.read(html_body)
    return CountedStack.reads


# --- a step repeated per piece ----------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", ["rgb(" * 30 + "1" + ")" * 30, "calc(" * 30 + "1px" + ")" * 30, "translate(1px) "])
def test_each_call_of_a_value_is_found_by_its_parentheses_not_read_on_character_by_character(unit: str) -> None:
    """Each call was read on, a character at a time, to its end: a value of calls nested in calls, once per call.
    Now a call's arguments are taken out once (a read of the value per call)."""
    value = (unit + " ") * 50
    calls = value.count("(")
    assert reads_of_functions(value) <= calls


@pytest.mark.parametrize("value", ["rgb(" * 100 + "1" + ")" * 100, "translate(" * 2000])
def test_calls_nested_deeper_than_any_style_are_refused_as_unreadable_where_they_could_hide(value: str) -> None:
    """Each call's arguments hold every call inside it: past 32 levels (as for math) the value is not read."""
    assert screening._unreadable({"opacity": value}) == f"opacity:{value} (screening cannot work it out)"
    assert screening._unreadable({"opacity": "rgb(" * 30 + "1" + ")" * 30}) is None


def test_the_calls_of_a_value_are_still_its_outer_ones_first() -> None:
    assert list(screening._functions("translate(calc(1px + 2px)) url(a(b)) scale(2")) == [
        ("translate", "calc(1px + 2px)"), ("calc", "1px + 2px"), ("url", "a(b)"), ("scale", "2")]


@pytest.mark.parametrize("body", [
    # each end tag looked down the stack for its element, past thousands, to the <button> it stops at
    lambda n: "<p><button>" + "<div>" * n + "</p>" * n,
    lambda n: "<li><table>" + "<div>" * n + "</li>" * n,
    # each <div> closes an open <p> if nothing in between stops it: the stack was read down to the <button>
    lambda n: "<p><button>" + "<div>" * n,
])
def test_an_end_tag_or_an_implied_end_costs_the_same_however_many_elements_are_open(body: Any) -> None:
    assert stack_reads(body(1000)) <= 2.2 * stack_reads(body(500))


def test_scopes_close_what_a_browser_closes() -> None:
    """What the depths of each tag decide is what reading the stack decided: a </p> does not end a <p> outside
    the <button> it is in, a </tr> ends the row outside a cell, a <li> ends the item before it."""
    reader = screening._HtmlReader()
    reader.read("<p><button><div></p><table><tr><td><span></tr><ul><li>a<li>b")
    assert [e.tag for e in reader.at_footer] == ["p", "button", "div", "table", "ul", "li"]


# --- limits ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "<p>Hi</p>" + "<style" * 200,  # a tag with no ">" (HTMLParser read on from each later "<" to the end)
    "<p>Hi</p>" + "<a " * 200,
    "<p>Hi</p>" + "<!--" * 200,  # a comment never closed
    "<p>Hi</p>" + "</a" * 200,
    "<p>Hi</p>" + "<?" * 200,
    "<p>Hi</p>" + '<p style="' * 200,
    "<p>Hi</p></body>" + "<!--" * 200,  # after the body's end too: the reading is as long
    "<p>Hi</p><!-- " + "x" * 70_000,  # long, with few "<"
])
def test_a_long_unfinished_rest_is_refused_as_unreadable_not_read_from_every_later_angle_bracket(body: str) -> None:
    found = unreadable(body)
    assert len(found) == 1 and "markup left unfinished at the end" in found[0], refusals(body)


@pytest.mark.parametrize(("body", "refused"), [
    ("<p>Hi</p></body></html", False),  # a last tag cut short after the body: read as before
    ("<p>Hi</p><!-- a note", True),  # an unclosed comment where the footer goes, refused as before
    ("<p>Hi</p><div", True),
])
def test_a_short_unfinished_rest_is_read_as_before(body: str, refused: bool) -> None:
    assert not unreadable(body)
    assert bool(refusals(body)) is refused


def test_more_elements_than_any_email_has_are_refused_as_unreadable() -> None:
    assert unreadable("<p>x</p>" * (screening._ELEMENTS + 1)) == [
        f"{UNREADABLE} (more than {screening._ELEMENTS} elements), so it cannot tell whether the unsubscribe link "
        "and footer Herald adds would show. No email builder writes such a body: simplify it."]
    assert refusals("<p>x</p>" * (screening._ELEMENTS - 10)) == []


def test_thousands_of_nested_elements_are_still_read() -> None:
    """Depth costs nothing more: only the number of elements is limited."""
    assert refusals("<div>" * 15_000 + "Hello" + "</div>" * 15_000) == []


def test_more_style_rules_than_any_email_has_are_refused_as_unreadable() -> None:
    rules = "".join(f".c{i} {{ color:#333 }}" for i in range(screening._STYLE_RULES + 1))
    assert "more than 5000 style rules" in " ".join(unreadable(f"<style>{rules}</style><p>Hi</p>"))
    fewer = "".join(f".c{i} {{ color:#333 }}" for i in range(1000))
    assert refusals(f"<style>{fewer}</style><p>Hi</p>") == []


def test_a_selector_list_counts_as_a_rule_per_selector() -> None:
    """A pattern looked ahead from each comma of a list for the next parenthesis: thousands of selectors read the
    list once per comma."""
    selectors = ",".join(f".c{i}" for i in range(screening._STYLE_RULES + 1))
    assert "more than 5000 style rules" in " ".join(unreadable(f"<style>{selectors} {{ color:#333 }}</style>"))


def test_selector_lists_split_as_before() -> None:
    old = re.compile(r",(?![^()]*\))")
    for selectors in ["a, b", ":is(a, b), c", "a:not(.x,.y) , b ,", "a(, b", "a), b", ",", "", ":is(a,(b,c)),d"]:
        assert screening._SELECTOR_LIST.split(selectors) == old.split(selectors)


def test_css_blocks_nested_deeper_than_any_style_sheet_are_refused_as_unreadable() -> None:
    """Each level of nested rules writes its parents' selectors out again: thousands of levels read as many times
    as long."""
    body = "<style>" + "a{" * 5000 + "}" * 5000 + "</style><p>Hi</p>"
    assert "CSS blocks nested more than 32 deep" in " ".join(unreadable(body))
    assert refusals("<style>@media (max-width:600px){ .a { .b { color:#333 } } }</style><p>Hi</p>") == []


def test_a_selector_with_brackets_nested_deeper_than_any_builder_writes_is_refused_as_unreadable() -> None:
    """`:is(` in `:is(`: a pass over the whole selector for each level (a selector is read when its rule hides)."""
    body = "<style>" + ":is(" * 3000 + "p" + ")" * 3000 + " { display:none }</style><p>Hi</p>"
    assert "a selector with brackets nested more than 16 deep" in " ".join(unreadable(body))
    assert not unreadable("<style>.x:not(:is(.y, [data-a='(1)'])) { display:none }</style><p>Hi</p>")


# --- what the fixes leave as it was ------------------------------------------------------------------------------

def test_a_control_character_written_in_the_body_is_not_read_as_template_code() -> None:
    """The template reading stands a mark (U+0001) for each piece of code: one written in the body named a piece
    that is not there (an IndexError, a 500 to the author)."""
    assert refusals("<p>\x010\x01 and \x017\x01</p>") == []


@pytest.mark.parametrize("body", [
    "{% if vip %}<div>{% endif %}</div></body>",
    "<style>{{ colour }}</style><p>Hi</p>\n",
    "<STYLE media=x>p{color:#333}</style >{# a {% note %} #}{% if a %}<p>{% else %}</p>{% endif %}{{}}{%}%}",
    "<p>Hi</p>{# open {{ x }}<style>{{ y }}",
    "{{{% if x %}}}{%- set a = '}}' -%}<style",
    "<style>a{}</style><style\n>b{}",
])
def test_template_code_comments_and_style_elements_are_found_where_the_patterns_found_them(body: str) -> None:
    """What replaced the patterns (which read the rest of the body again from each unclosed start) finds the same
    pieces: code from its start to the first end after it, comments likewise, a <style> to its end tag or the
    end (before a last line break, as `$` reads)."""
    comment = re.compile(r"\{#.*?#\}", re.DOTALL)
    code = re.compile(r"\{%-?\s*(\w*).*?%\}|\{\{.*?\}\}", re.DOTALL)
    style = re.compile(r"<style\b[^>]*>(.*?)(?:</style\s*>|$)", re.IGNORECASE | re.DOTALL)
    marked = code.sub(lambda m: f"[{m.group()}]", comment.sub("", body))
    assert screening._template_code(screening._without_template_comments(body), lambda piece: f"[{piece}]") == marked
    assert list(screening._style_elements(marked)) == [(m.start(), m.end(), m.group(1)) for m in style.finditer(marked)]


def test_math_longer_than_anyone_writes_is_not_worked_out() -> None:
    """A calc() of thousands of terms was tokenised whole for each reading; past 10,000 characters it has no value,
    as math too deep has none, and a property that can hide is then refused where it could hide the footer."""
    long = "calc(" + "1px + " * 2000 + "1px)"
    assert screening._unreadable({"width": long}) == f"width:{long} (screening cannot work it out)"
    assert screening._unreadable({"width": "calc(100% - " + "1px - " * 100 + "1px)"}) is None


def test_a_submission_is_screened_while_the_event_loop_answers_other_requests(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Screening the largest allowed body takes seconds: a submission screens in a worker thread, so a request
    of another customer is served meanwhile (here: a coroutine the loop runs while the screening waits for it)."""
    import asyncio
    import contextlib
    import threading
    from collections.abc import AsyncIterator

    from herald_campaigns import domain, handlers
    from herald_campaigns.domain import CampaignState, ListInfo
    from herald_shared.contract.campaigns import CampaignContent

    state = CampaignState("acme", "c1", "draft", "November", "news", {}, CampaignContent(
        subject="News", from_name="Shop", from_email="a@shop.example", html_body="<p>hello</p>", text_body="hi"))
    other_request_served = threading.Event()
    seen: dict[str, bool] = {}

    def slow_screening(*_: object) -> screening.Screening:
        seen["loop ran meanwhile"] = other_request_served.wait(timeout=30)  # the signal, or the deadline
        seen["on screening's own threads"] = threading.current_thread().name.startswith("herald-screening")
        return screening.Screening(matches=(), refusals=())

    class Store:
        async def campaign_state(self, *_: object) -> CampaignState:
            return state

        async def list_info(self, *_: object) -> ListInfo:
            return ListInfo("news", {})

        async def account(self, *_: object) -> None:
            return None

        async def campaign(self, *_: object) -> dict[str, str]:
            return {"campaign_id": "c1"}

    class Recorder:
        @contextlib.asynccontextmanager
        async def serialised(self, _: str) -> AsyncIterator[None]:
            yield

        async def commit(self, _: object) -> None:
            return None

    async def senders(*_: object) -> domain.Senders:
        return domain.senders_of([], frozenset())

    monkeypatch.setattr(domain, "screening_of", slow_screening)
    monkeypatch.setattr(domain, "submittable", lambda *_, **__: None)
    monkeypatch.setattr(domain, "submit", lambda *_, **__: [])
    service = handlers.CampaignsService(Store(), Recorder(), dns=None,  # type: ignore[arg-type]
                                        screening=handlers.screening_pool())
    monkeypatch.setattr(service, "senders", senders)

    async def other_request() -> None:
        other_request_served.set()

    async def both() -> None:
        submission = asyncio.create_task(service.submit("acme", "c1", None, None, "author"))
        await asyncio.sleep(0)  # the submission starts first, and reaches its screening
        await other_request()
        await submission

    asyncio.run(both())
    assert seen == {"loop ran meanwhile": True, "on screening's own threads": True}


@pytest.mark.parametrize("body", [
    '<div style="height:calc(1px + {}attr(x));overflow:hidden"><a href="{{{{ unsubscribe_url }}}}">u</a></div>',
    '<style>.f{{height:calc(1px + {}attr(x));overflow:hidden}}</style><div class=f><p>Left open: the footer goes in it',
    '<a href="https://example.com/{}">Unsubscribe</a>',
])
def test_a_refusal_quotes_a_long_value_cut_short_not_whole(body: str) -> None:
    found = refusals(body.format("1px + " * 20_000))
    assert found, "the body hides the link: refused"
    for reason in found:
        assert len(reason) < 1_000, reason[:300]
        assert "…" in reason
