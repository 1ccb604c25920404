"""Templates cannot escape the Jinja2 sandbox, and producers' data is never code.

Template files are the operators'; ``data``, ``title`` and ``body`` are the
producers'. Every escape attempt must end in :class:`TemplateError` (the
router dead-letters it as "template error", recorded DEAD) whose message
gives nothing away, and hostile data must render as the literal text it is.
"""

from __future__ import annotations

import os

import pytest

from rules.templates import TemplateCatalog, TemplateError, render
from tests.unit.test_templates import catalog_of, render_with

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__base__.__subclasses__() }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__.__builtins__.open('/etc/passwd').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ name|attr('__class__') }}",
    "{{ name['__class__'] }}",
    "{{ name.__class__.__init__.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format(name) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '%s'.__mod__(name.__class__) }}",
    "{{ '{x.__class__}'.format_map({'x': name}) }}",
    "{{ items.append('x') }}",
    "{{ items.pop() }}",
    "{{ mapping.update({'k': 'v'}) }}",
    "{{ mapping.clear() }}",
    "{{ range(100000000)|list }}",
    "{{ config }}",
    "{{ request.environ }}",
    "{{ import('os') }}",
    "{% import 'os' as os %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_escape_attempts_fail_safely(tmp_path, source, monkeypatch):
    # Given a canary secret in the environment and a template reaching for internals
    monkeypatch.setenv("HERALD_CANARY_SECRET", "canary-4f1b9c")
    catalog = catalog_of(tmp_path, {"t/1/en.toml": f"body = '''{source}'''"})
    # When it is rendered with ordinary data
    with pytest.raises(TemplateError) as raised:
        render_with(catalog, "t", data={"name": "Ana", "items": [1, 2],
                                        "mapping": {"a": 1}})
    # Then it is a template error (dead-lettered by the router), naming the template,
    # and nothing of the process leaks into its message
    message = str(raised.value)
    assert message.startswith("template 't@1' (en)")
    for leak in ("canary-4f1b9c", "<class", "<module", "<function", "root:", "environ("):
        assert leak not in message, message


def test_data_is_not_mutated_by_a_template(tmp_path):
    data = {"items": [1, 2]}
    catalog = catalog_of(tmp_path, {"t/1/en.toml": "body = '{{ items.append(3) }}ok'"})
    with pytest.raises(TemplateError, match="unsafe"):
        render_with(catalog, "t", data=data)
    assert data == {"items": [1, 2]}


HOSTILE_DATA = ["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ ''.__class__ }}",
                "{0.__class__}", "%s%s%n", "${7*7}", "#{7*7}", "<script>alert(1)</script>"]


@pytest.mark.parametrize("value", HOSTILE_DATA)
def test_producer_data_renders_as_the_literal_text(tmp_path, value):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": "body = 'Hello {{ name }}!'"})
    assert render_with(catalog, "t", data={"name": value}).body == f"Hello {value}!"


@pytest.mark.parametrize("value", HOSTILE_DATA)
def test_a_notifications_own_text_is_never_a_template(value):
    rendered = render(TemplateCatalog(), template=None, title=value, body=value, data={},
                      locale=None, channel="push")
    assert (rendered.title, rendered.body) == (value, value)


@pytest.mark.parametrize("value", ["<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>"])
def test_data_is_escaped_in_html_email(tmp_path, value):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": "email_html = '<p>{{ name }}</p>'"})
    html = render_with(catalog, "t", channel="email", data={"name": value}).html
    assert "<script>" not in html and "<img" not in html


@pytest.mark.parametrize(("reference", "locale"), [
    ("../../etc/passwd", None), ("t@../../1", None), ("t@1", "../../../etc/passwd"),
    ("t@01", None), ("t@1e3", None), ("t\x00", None), ("t@99999999999999999999", None)])
def test_template_references_and_locales_are_names_not_paths(tmp_path, reference, locale):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": "body = 'ok'"})
    try:
        rendered = render_with(catalog, reference, locale=locale)
    except TemplateError as exc:
        assert "passwd" not in str(exc) or "unknown" in str(exc) or "invalid" in str(exc)
    else:
        # A locale that is not there falls back to the default: the known template.
        assert rendered.body == "ok" and reference == "t@1"
    assert os.path.exists("/etc/passwd")  # (nothing was read through a path)
