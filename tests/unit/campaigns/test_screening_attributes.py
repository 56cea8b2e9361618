"""The footer Herald adds where the body ends, inside an element that HTML's presentational `width`/`height`
attributes size and CSS clips, or inside a `<marquee>`: refused as the same CSS size is (review R2: in Chromium
only 7 to 30 of the link's 210 points showed, and a marquee's link never stands still to be clicked). The widths
and heights email builders write on their tables (600, 100%) pass. Drawn by Chromium in
tests/integration/delivery/test_footer_in_browser.py."""

from __future__ import annotations

import pytest

from herald_campaigns.screening import screen


def refused_for(html_body: str) -> list[str]:
    return [refusal.reason for refusal in screen(subject="News", preheader=None, html_body=html_body,
                                                 text_body="News").refusals]


OPEN = "This element hides its content ({what}) and is not closed before the end of the body"
RULE = "A <style> rule ({selector}) hides content with {what}, and it could reach the unsubscribe link"
MARQUEE = OPEN.format(what="a <marquee> moves its content through a box that cuts it off")
FIXED = "<table width=1 style='table-layout:fixed'><tr>"


@pytest.mark.parametrize(("html_body", "reason"), [
    # the reviewer's four
    ("<p>News</p><marquee width=1>", MARQUEE),
    ("<p>News</p><marquee style='width:1px'>", MARQUEE),
    ("<p>News</p><marquee height=1 direction=up>", MARQUEE),
    (f"<p>News</p>{FIXED}<td width=1 style='overflow:hidden'>", OPEN.format(what="width=1px with overflow:hidden")),
    # a marquee of any size keeps the link moving; in a paragraph, as HTML lets a marquee be
    ("<html><body><p>News</p><marquee>", MARQUEE),
    ("<html><body><p>News <MARQUEE behavior=alternate scrollamount=20>", MARQUEE),
    # the attribute as browsers read it: "1px" is 1, a percentage of the table, on a header cell, on the table
    (f'<p>News</p>{FIXED}<td width="1px" style="overflow:hidden">', OPEN.format(what="width=1px with overflow:hidden")),
    ("<p>News</p><table style='table-layout:fixed' width=600><tr><td width=' 10%' style='overflow:hidden'>",
     OPEN.format(what="width=10% with overflow:hidden")),
    (f"<p>News</p>{FIXED}<th width=1 style='overflow:clip'>", OPEN.format(what="width=1px with overflow:clip")),
    ("<p>News</p><table width=1 style='table-layout:fixed;overflow:hidden'><tr><td>",
     OPEN.format(what="width=1px with overflow:hidden")),
    ("<p>News</p><table width=600><tr><td width=300 style='overflow:hidden;white-space:nowrap'>",
     OPEN.format(what="width=300px with overflow:hidden")),
    # a cell made a block is as tall as its height attribute says
    ("<p>News</p><table><tr><td height=1 style='overflow:hidden;display:block'>",
     OPEN.format(what="height=1px with overflow:hidden")),
    # overflow:hidden from a rule that could select the cell, with the width its attribute gives it
    (f"<style>td{{overflow:hidden}}</style><p>News</p>{FIXED}<td width=1>",
     RULE.format(selector="td", what="width=1px with overflow:hidden")),
    (f"<style>.pad{{overflow:hidden}}</style><p>News</p><div class='shell'>{FIXED}<td class=pad width=1>",
     RULE.format(selector=".pad", what="width=1px with overflow:hidden")),
    (f"<style>.shell td{{overflow:hidden}}</style><p>News</p><div class='shell'>{FIXED}<td width=1>",
     RULE.format(selector=".shell td", what="width=1px with overflow:hidden")),
    ("<style>table{table-layout:fixed;overflow:hidden}</style><p>News</p><table width=1><tr><td>",
     RULE.format(selector="table", what="width=1px with overflow:hidden")),
])
def test_a_size_from_attributes_clipping_the_footer_or_an_open_marquee_is_refused(html_body: str,
                                                                                  reason: str) -> None:
    """PRODUCT.md, "Every message": the unsubscribe link and footer cannot be removed or hidden."""
    reasons = refused_for(html_body)
    assert any(found.startswith(reason) for found in reasons), reasons


def test_an_unsubscribe_link_of_the_customers_inside_a_marquee_is_refused() -> None:
    reasons = refused_for('<marquee><a href="{{ unsubscribe_url }}">Unsubscribe</a></marquee><p>News</p>')
    assert any(found.startswith("The unsubscribe link or wording is inside an element that hides it (a <marquee>")
               for found in reasons), reasons


# Stripo's export (abridged): its stock style sheet and the nested tables of 100% and 600px every message has.
STRIPO = """<!DOCTYPE html><html><head><style type="text/css">
.es-wrapper{width:100%;height:100%;background-repeat:repeat;background-position:center top}
.es-desk-hidden{display:none;float:left;overflow:hidden;width:0;max-height:0;line-height:0;mso-hide:all}
table td,a{font-size:14px}
@media only screen and (max-width:600px){.es-content table{width:100%!important;max-width:600px!important}
.es-m-p0{padding:0!important} table.es-table-not-adapt td{overflow:hidden;width:auto!important}}
</style></head><body style="width:100%;font-family:arial;padding:0;margin:0">
<div class="es-wrapper-color"><table class="es-wrapper" width="100%" cellspacing="0" cellpadding="0"><tr>
<td valign="top"><table class="es-content" cellspacing="0" cellpadding="0" align="center"><tr><td align="center">
<table class="es-content-body" width="600" cellspacing="0" cellpadding="0" bgcolor="#ffffff" align="center"><tr>
<td class="es-p20t es-p20r es-p20l" align="left"><table width="100%" cellspacing="0" cellpadding="0"><tr>
<td width="560" valign="top" align="center"><p>Rye season is here.</p>"""
STRIPO_CLOSED = STRIPO + "</td></tr></table></td></tr></table></td></tr></table></td></tr></table></div></body></html>"


@pytest.mark.parametrize("html_body", [
    "<marquee>Sale today!</marquee><p>News</p>",
    "<p>News <marquee height=1 width=1>Sale</marquee> below</p>",
    # builders' tables, left open where the footer goes
    "<p>News</p><table width='600' align='center'><tr><td width='600'>",
    '<p>News</p><table width="100%"><tr><td>',
    "<p>News</p><table width=600 style='table-layout:fixed'><tr><td width=600 style='overflow:hidden'>",
    "<p>News</p><table><tr><td width=300 style='overflow:hidden'>",
    "<style>td{overflow:hidden}</style><p>News</p><table width=600><tr><td width=600>",
    STRIPO,
    STRIPO_CLOSED,
    # not a presentational attribute of a <div>: browsers ignore it
    "<p>News</p><div width=1 style='overflow:hidden'>",
    "<p>News</p><div height=1 style='overflow:hidden'>",
    # a table's or cell's height is only the least it is: content makes it taller
    "<p>News</p><table height=1 style='overflow:hidden'><tr><td height=1 style='overflow:hidden'>",
    "<p>News</p><table><tr height=1 style='overflow:hidden'><td>",
    # nothing clips: a narrow cell grows, or its content overflows it, drawn
    f"<p>News</p>{FIXED}<td width=1>",
    # a table's or cell's zero is ignored, and CSS sizes the element over its attribute
    "<p>News</p><table><tr><td width=0 style='overflow:hidden'>",
    f"<p>News</p>{FIXED}<td width=1 style='width:600px;overflow:hidden'>",
    "<style>td{overflow:hidden;width:600px}</style><p>News</p><table><tr><td width=1>",
    # a rule that cannot select the narrow cell
    "<style>.promo td{overflow:hidden}</style><p>News</p><table class=main width=1><tr><td width=1>",
    # <blink> draws its content, unmoving, in every browser today
    "<p>News</p><blink>",
])
def test_builders_sizes_closed_marquees_and_sizes_that_clip_nothing_pass(html_body: str) -> None:
    assert refused_for(html_body) == []
