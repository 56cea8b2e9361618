"""The shared template renderer: what it renders, what it refuses (with the line), and the limits of a render."""

from __future__ import annotations

import pytest

from herald_shared.templating import (
    STANDARD_FIELDS,
    RenderError,
    TemplateProblem,
    check,
    compile_template,
    constant_texts,
    every_branch,
    sample_values,
)

# Known ways out of a Jinja2 sandbox, and ways to make a render run away; each must be refused when the
# template is saved (check) and when it is compiled for sending (compile_template).
ESCAPE_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ (''|attr('__class__'))|attr('__mro__') }}",
    '{{ "{0.__class__}"|format(x) }}',
    "{{ '%s'|format(first_name) }}",
    "{{ first_name|map('upper')|list }}",
    "{{ first_name|select }}",
    "{{ first_name.format_map(x) }}",
    "{{ first_name['__class__'] }}",
    "{{ first_name[0:3] }}",
    "{% for x in range(10**9) %}{% endfor %}",
    "{% for x in first_name %}{{ x }}{% endfor %}",
    "{{ 9**9**9 }}",
    "{{ x * 100000000 }}",
    "{{ 'a' * 100000000 }}",
    "{{ first_name + first_name }}",
    "{{ 10 // 3 }}",
    "{{ 10 % 3 }}",
    "{{ -first_name }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% call m() %}x{% endcall %}",
    "{% include '/etc/passwd' %}",
    "{% import 'x' as y %}",
    "{% from 'x' import y %}",
    "{% extends 'x' %}",
    "{% block body %}{% endblock %}",
    "{% set x %}{{ first_name }}{% endset %}",
    "{% set a, b = 1, 2 %}",
    "{% with x = 1 %}{{ x }}{% endwith %}",
    "{% filter upper %}x{% endfilter %}",
    "{% autoescape false %}{{ first_name }}{% endautoescape %}",
    "{{ first_name|safe }}",
    "{{ {'a': 1} }}",
    "{{ loop }}",
    "{{ range }}",
    "{% do x %}",
]


@pytest.mark.parametrize("payload", ESCAPE_PAYLOADS)
def test_sandbox_escape_payloads_are_refused_at_check_and_at_compile(payload: str) -> None:
    with pytest.raises(TemplateProblem) as checked:
        check(payload, ["x"], where="html_body", html=True)
    assert checked.value.where == "html_body" and checked.value.line == 1 and checked.value.reason
    with pytest.raises(TemplateProblem):
        compile_template(payload, html=True)
    with pytest.raises(TemplateProblem):
        compile_template(payload)


def test_merge_values_and_conditions_render() -> None:
    template = compile_template(
        'Hello {{ first_name | default("friend") }}!\n'
        "{% if city == 'Riga' %}See you in Riga.{% elif city %}See you in {{ city | title }}.{% else %}Hi.{% endif %}\n"
        "{% set greeting = 'Dear ' ~ first_name | trim %}{{ greeting }}\n"
        "{{ 'VIP' if points is number and points > 100 else 'member' }} {{ points | default(0) | round(1) }}\n")
    assert template.render({"first_name": "Anna", "city": "Riga", "points": 120.44}) == (
        "Hello Anna!\nSee you in Riga.\nDear Anna\nVIP 120.4\n")
    assert template.render({"first_name": "", "city": "tallinn"}) == (
        "Hello friend!\nSee you in Tallinn.\nDear \nmember 0\n")


def test_default_treats_an_empty_or_missing_value_as_missing() -> None:
    """Merge values are strings: a subscriber without a first name has "" (Jinja2's own default keeps it)."""
    template = compile_template('{{ first_name | default("there") }}/{{ nickname | d("-") }}/{{ zero | d(1) }}'
                                '/{{ zero | default(1, true) }}')
    assert template.render({"first_name": "", "zero": 0}) == "there/-/0/1"
    assert template.render({"first_name": None, "nickname": "Ann", "zero": 0}) == "there/Ann/0/1"


def test_values_are_html_escaped_in_html_and_left_alone_in_text() -> None:
    values = {"first_name": '<script>alert("x")</script> & Co', "last_name": "O'Hara"}
    source = "<p>{{ first_name }} {{ last_name | upper }} {{ 'Ms ' ~ last_name }}</p>"
    assert compile_template(source, html=True).render(values) == (
        "<p>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co O&#39;HARA Ms O&#39;Hara</p>")
    assert compile_template(source).render(values) == f"<p>{values['first_name']} O'HARA Ms O'Hara</p>"
    # A default written by the customer is escaped too; their own markup (the template text) is not.
    assert compile_template('<b>{{ x | default("<i>") }}</b>', html=True).render({}) == "<b>&lt;i&gt;</b>"


def test_a_refusal_names_the_construct_and_its_line() -> None:
    source = "<p>Hello {{ first_name }}</p>\n<p>{{ city }}</p>\n{% for item in items %}{% endfor %}\n"
    with pytest.raises(TemplateProblem) as refused:
        check(source, ["city", "items"], where="html_body", html=True)
    assert (refused.value.where, refused.value.line) == ("html_body", 3)
    assert "for" in refused.value.reason
    assert str(refused.value).startswith("html_body line 3: ")
    with pytest.raises(TemplateProblem, match=r"text_body line 2: attribute access"):
        check("Hi\n{{ first_name.upper }}", [], where="text_body")
    with pytest.raises(TemplateProblem, match=r"subject line 1: .*filter 'format'"):
        check("{{ first_name|format }}", [], where="subject")
    with pytest.raises(TemplateProblem) as syntax:
        check("Hello\n\n{{ first_name ", [], where="text_body")
    assert syntax.value.line == 3


def test_the_first_problem_is_reported() -> None:
    with pytest.raises(TemplateProblem) as refused:
        check("{{ a }}\n{{ b.c }}\n{{ d }}", ["a"], where="text_body")
    assert refused.value.line == 2 and "attribute" in refused.value.reason


def test_unknown_fields_are_refused_at_check_and_render_empty_when_compiled() -> None:
    with pytest.raises(TemplateProblem) as refused:
        check("Hi {{ first_name }},\nyour {{ plan }} and {{ sity }}", ["city", "plan"], where="text_body")
    assert refused.value.line == 2 and "'sity'" in refused.value.reason
    check("Hi {{ first_name }} {{ email }} {{ last_name }} {{ unsubscribe_url }} {{ city }}", ["city"],
          where="text_body")
    assert STANDARD_FIELDS == {"email", "first_name", "last_name", "unsubscribe_url"}
    # Names the template sets itself are fields too, wherever they are used.
    check("{% if vip %}{{ label }}{% endif %}{% set label = 'VIP' %}{% set vip = true %}", [], where="text_body")
    assert compile_template("[{{ sity }}]").render({}) == "[]"


def test_reserved_names_are_refused_even_as_custom_fields() -> None:
    for name in ("config", "self", "request", "range"):
        with pytest.raises(TemplateProblem, match="reserved"):
            check(f"{{{{ {name} }}}}", [name], where="text_body")
        with pytest.raises(TemplateProblem, match="reserved"):
            check(f"{{% set {name} = 1 %}}", [], where="text_body")


def test_no_globals_are_reachable() -> None:
    # Not even by a name the allowlist lets through: the environment has no globals at all.
    assert compile_template("[{{ __builtins__ }}][{{ os }}]").render({}) == "[][]"


def test_a_huge_value_hits_the_output_limit() -> None:
    template = compile_template("Dear {{ first_name }}", max_output_chars=1000)
    assert template.render({"first_name": "Anna"}) == "Dear Anna"
    with pytest.raises(RenderError, match="longer than 1,000"):
        template.render({"first_name": "x" * 10_000})
    with pytest.raises(RenderError, match="longer than 1,000"):
        compile_template("{% if first_name %}{{ first_name }}{% endif %}", max_output_chars=1000).render(
            {"first_name": "x" * 10_000})


def test_doubling_a_value_with_set_hits_the_computed_limit() -> None:
    """A chain of `{% set x = x ~ x %}` doubles a string each time: 2**60 characters unless stopped."""
    template = compile_template("{% set x = first_name %}" + "{% set x = x ~ x %}" * 60 + "{{ x | length }}")
    with pytest.raises(RenderError, match="computed more than"):
        template.render({"first_name": "ab"})
    growing = compile_template("{% set x = first_name %}" + "{% set x = x | e | title %}" * 40 + "{{ x }}",
                               html=True, max_output_chars=10_000)
    with pytest.raises(RenderError):
        growing.render({"first_name": "&" * 1000})


def test_a_slow_render_hits_the_time_limit() -> None:
    template = compile_template("{% set x = first_name %}" + "{% set y = x | upper %}" * 400,
                                max_output_chars=10**9, max_seconds=0.0)
    with pytest.raises(RenderError, match="longer than"):
        template.render({"first_name": "x" * 100_000})


def test_a_failing_render_is_a_render_error() -> None:
    with pytest.raises(RenderError, match="TypeError"):
        compile_template("{% if points > 3 %}x{% endif %}").render({"points": "many"})


def test_templates_too_large_or_too_deep_are_refused() -> None:
    with pytest.raises(TemplateProblem, match="too long"):
        compile_template("{{ first_name }}" * 5000)
    with pytest.raises(TemplateProblem, match="nested too deeply"):
        compile_template("{{ first_name" + "|trim" * 100 + " }}")
    with pytest.raises(TemplateProblem, match="nested too deeply"):
        compile_template("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")


@pytest.mark.parametrize("html", [False, True])
def test_text_and_fields_alone_render_as_jinja2_renders_them(html: bool) -> None:
    """Such templates (most) skip Jinja2's runtime; the result must be the same as through it."""
    tags = ["a", "b", "c", "d", "e", "f", "missing", "a | default('<none>')", "b | d(1)", "f | default('&')",
            "missing | default(2.5)", "e | default('x')"]
    fast = compile_template("<p>" + "|".join(f"{{{{ {tag} }}}}" for tag in tags) + "</p>\n", html=html)
    full = compile_template("<p>" + "|".join(f"{{{{ {tag} if true }}}}" for tag in tags) + "</p>\n", html=html)
    assert fast._parts is not None and full._parts is None
    values = {"a": None, "b": 0, "c": 3.5, "d": True, "e": "<b>Tom & 'Jerry'</b>", "f": ""}
    assert fast.render(values) == full.render(values)
    assert fast.render({}) == full.render({})


def test_plain_text_is_returned_as_written() -> None:
    template = compile_template("No tags at all, {not even} this.\r\nSecond line\n")
    assert template.static_text == "No tags at all, {not even} this.\nSecond line\n"
    assert template.render({"first_name": "x"}) == template.static_text
    assert compile_template("Hi {{ first_name }}").static_text is None
    assert compile_template("{# a comment #}Hi\n").render({}) == "Hi\n"


def test_sample_values_are_plausible_for_each_kind() -> None:
    values = sample_values({"city": "text", "points": "number", "birthday": "date", "vip": "boolean",
                            "favourite_colour": "text"})
    assert set(STANDARD_FIELDS) <= set(values)
    assert values["city"] == "Riga" and values["points"] == 42 and values["vip"] is True
    assert values["birthday"] == "2026-11-02" and values["favourite_colour"] == "Favourite colour"
    template = compile_template("{{ first_name }} {% if vip %}VIP {% endif %}{{ points }} {{ city }}")
    assert template.render(values) == "Anna VIP 42 Riga"


# Screening's readings: what template code could write for any member (campaigns screens them, never sends them)

SAMPLE = {"first_name": "Anna", "email": "anna.berzina@example.com", "points": 42}


@pytest.mark.parametrize(("source", "written_out"), [
    # a branch the sample does not take; an `elif` chain; an inline condition and `and`/`or`, each both ways
    ('<p>{% if first_name != "Anna" %}{{ "online ca" ~ "sino" }}{% endif %}</p>', "<p>online casino</p>"),
    ("{% if a %}1{% elif b %}2{% elif c %}3{% else %}4{% endif %}", "1234"),
    ('{{ "" if email == "anna.berzina@example.com" else "online casino" }}', "online casino"),
    ('{{ "online ca" ~ ("sino" if first_name != "Anna" else "") }}', "online casino"),
    ('{{ first_name and "!" }}|{{ x or "y" }}', "Anna!|y"),
    # conditions nested in arms, and merge tags in them, with the values given
    ("{% if a %}{% if b %}x{% else %}{{ first_name }}{% endif %}{% endif %}", "xAnna"),
])
def test_every_branch_writes_every_arm_out_in_order(source: str, written_out: str) -> None:
    renderings = every_branch(source, SAMPLE, html=True)
    assert renderings[0] == written_out


@pytest.mark.parametrize(("source", "for_someone"), [
    # a `{% set %}` in an arm the sample does not take, overwritten by the `else` when all arms are written out
    ('{% if first_name != "Anna" %}{% set p = "online ca" %}{% else %}{% set p = "" %}{% endif %}{{ p ~ "sino" }}',
     "online casino"),
    ('{% set p = "x" if first_name == "Anna" else "online ca" %}{{ p ~ "sino" }}', "online casino"),
    ('{% if a %}{% set p = "1" %}{% elif b %}{% set p = "online ca" %}{% else %}{% set p = "3" %}{% endif %}'
     '{{ p ~ "sino" }}', "online casino"),
    ('online ca{% if first_name == "Anna" %}x{% endif %}sino', "online casino"),  # the empty else
])
def test_every_branch_renders_each_arm_position_too(source: str, for_someone: str) -> None:
    """What a member gets from one condition is one of the renderings, `{% set %}`s in its arms included."""
    assert for_someone in every_branch(source, SAMPLE)


def test_every_branch_needs_no_condition_to_hold_and_fails_no_filter() -> None:
    """No condition is evaluated, and a filter on an arm's value of another kind gives back the value: a
    template that renders for its members is read whole."""
    source = '{{ (points if points is number else "many") | round }} {{ points > 5 }} {{ "a" | int(0) }}'
    assert every_branch(source, SAMPLE)[0] == "42many False 0"
    assert compile_template(source).render(SAMPLE) == "42 True 0"  # rendering for a member is unchanged


def test_every_branch_of_a_template_without_conditions_is_its_rendering_alone() -> None:
    assert every_branch("Hello {{ first_name }}, {{ 'x' ~ first_name }}", SAMPLE) == []
    assert every_branch("plain text", SAMPLE) == []


@pytest.mark.parametrize("payload", ESCAPE_PAYLOADS)
def test_screening_readings_refuse_what_check_refuses(payload: str) -> None:
    with pytest.raises(TemplateProblem):
        every_branch(payload, SAMPLE, html=True)
    with pytest.raises(TemplateProblem):
        constant_texts(payload, html=True)


def test_every_branch_is_bounded_like_a_render() -> None:
    doubling = "{% set x = first_name %}" + "{% set x = x ~ x %}" * 40 + "{% if a %}{{ x }}{% endif %}"
    with pytest.raises(RenderError):
        every_branch(doubling, SAMPLE)


def test_constant_texts_are_every_string_and_expression_of_constants_in_the_code() -> None:
    source = ('{% if first_name == "Anna" %}hi{% endif %}{{ "online ca" ~ "sino" }}{% set b = "BO" ~ "NUS" | lower %}'
              '{{ first_name ~ "x" }}{{ "free spins" | upper }}{{ 42 }}{{ x | default("y") }}')
    assert constant_texts(source, html=True) == [
        "Anna", "online casino", "online ca", "sino", "BOnus", "BO", "NUS", "x", "FREE SPINS", "free spins", "y"]
    assert constant_texts("Hello {{ first_name }}") == [] and constant_texts("plain") == []
