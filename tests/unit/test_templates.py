"""Templates: versions, locales, per-channel keys, sandboxing and SMS budgets."""

from pathlib import Path

import pytest

from app.errors import InvalidEvent
from rules.templates import (
    Rendered,
    TemplateCatalog,
    TemplateError,
    load_catalog,
    render,
    sms_segments,
    truncate_sms,
)

SHIPPED = Path(__file__).resolve().parents[2] / "templates"

EVERY_KEY = "\n".join(f'{key} = "{key}"' for key in (
    "title", "body", "email_subject", "email_body", "email_html",
    "push_title", "push_body", "sms", "inapp_title", "inapp_body"))


def catalog_of(tmp_path, files, default_locale="en"):
    """A catalog of ``{"name/version/locale.toml": text}`` written under tmp_path."""
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return load_catalog(tmp_path, default_locale=default_locale)


def render_with(catalog, template, channel="push", data=None, locale=None, **kwargs):
    return render(catalog, template=template, title=kwargs.pop("title", None),
                  body=kwargs.pop("body", None), data=data or {}, locale=locale,
                  channel=channel, **kwargs)


def passthrough(title, body, channel):
    return render(TemplateCatalog(), template=None, title=title, body=body, data={},
                  locale=None, channel=channel)


# --- versions and locales ---------------------------------------------------


@pytest.mark.parametrize(("reference", "expected"), [
    ("welcome", "v10"),       # the highest version, by number not by name
    ("welcome@1", "v1"),
    ("welcome@2", "v2"),
    ("welcome@10", "v10"),
])
def test_version_selection(tmp_path, reference, expected):
    # Given versions 1, 2 and 10 of a template
    catalog = catalog_of(tmp_path, {f"welcome/{v}/en.toml": f'title = "v{v}"' for v in (1, 2, 10)})
    # When it is rendered by reference
    rendered = render_with(catalog, reference)
    # Then the pinned version, or else the highest, is used
    assert rendered.title == expected


@pytest.mark.parametrize(("locale", "expected"), [
    ("pt-BR", "pt-BR"),  # exact
    ("pt_br", "pt-BR"),  # case and separator do not matter
    ("pt-PT", "pt"),     # the language
    ("fr-CA", "fr"),     # the language, which has no file of its own for the region
    ("de", "en"),        # the catalog's default
    (None, "en"),        # no locale given: the default
])
def test_locale_fallback(tmp_path, locale, expected):
    # Given a template in en, fr, pt and pt-BR
    catalog = catalog_of(tmp_path, {f"hello/1/{loc}.toml": f'title = "{loc}"'
                                    for loc in ("en", "fr", "pt", "pt-BR")})
    # When it is rendered for a locale
    # Then the exact locale, else the language, else the default is used
    assert render_with(catalog, "hello", locale=locale).title == expected


def test_default_locale_is_the_catalogs(tmp_path):
    # Given a catalog whose default locale is French
    catalog = catalog_of(tmp_path, {"hello/1/fr.toml": 'title = "fr"'}, default_locale="fr")
    # When a German user gets the template
    # Then it falls back to French
    assert render_with(catalog, "hello", locale="de").title == "fr"


@pytest.mark.parametrize(("reference", "locale", "message"), [
    ("nope", None, "unknown template 'nope'"),
    ("hello@3", None, "unknown version 3 of template 'hello'"),
    ("hello@2", "fr", "template 'hello@2' has no locale 'fr' (nor 'en')"),
    ("hello@2", "pt-BR", "template 'hello@2' has no locale 'pt-BR' (nor 'pt' nor 'en')"),
    ("hello@2", None, "template 'hello@2' has no locale 'en'"),
    ("hello@0", None, "invalid template reference 'hello@0'"),
    ("hello@v2", None, "invalid template reference 'hello@v2'"),
])
def test_unknown_references_say_what_is_missing(tmp_path, reference, locale, message):
    # Given a template with version 1 in en and version 2 in de only
    catalog = catalog_of(tmp_path, {"hello/1/en.toml": 'title = "hi"',
                                    "hello/2/de.toml": 'title = "hallo"'})
    # When a reference that does not resolve is rendered
    with pytest.raises(TemplateError) as raised:
        render_with(catalog, reference, locale=locale)
    # Then the error says exactly what is missing, and is bad input
    assert str(raised.value) == message
    assert isinstance(raised.value, InvalidEvent)


# --- channel keys -----------------------------------------------------------


@pytest.mark.parametrize(("text", "channel", "expected"), [
    # channel-specific keys win over generic ones
    (EVERY_KEY, "email", Rendered("email_subject", "email_body", "email_html")),
    (EVERY_KEY, "push", Rendered("push_title", "push_body")),
    (EVERY_KEY, "inapp", Rendered("inapp_title", "inapp_body")),
    (EVERY_KEY, "sms", Rendered(None, "sms")),
    # without them, the generic ones are used
    ('title = "T"\nbody = "B"', "email", Rendered("T", "B")),
    ('title = "T"\nbody = "B"', "push", Rendered("T", "B")),
    ('title = "T"\nbody = "B"', "inapp", Rendered("T", "B")),
    ('title = "T"\nbody = "B"', "sms", Rendered(None, "T: B")),
    ('body = "B"', "sms", Rendered(None, "B")),
    ('title = "T"', "sms", Rendered(None, "T")),
    # a specific key wins even when empty: push goes out without a title
    ('title = "T"\npush_title = ""\nbody = "B"', "push", Rendered(None, "B")),
    # a specific key of one channel does not leak into another
    ('title = "T"\nemail_subject = "S"\nbody = "B"', "push", Rendered("T", "B")),
])
def test_channel_specific_keys_win_over_generic_ones(tmp_path, text, channel, expected):
    # Given a template with some of the keys
    catalog = catalog_of(tmp_path, {"t/1/en.toml": text})
    # When it is rendered for a channel
    # Then that channel's keys are used where present, the generic ones elsewhere
    assert render_with(catalog, "t", channel=channel) == expected


@pytest.mark.parametrize(("title", "body", "channel", "expected"), [
    ("Hi", "There", "email", Rendered("Hi", "There")),
    ("Hi", "There", "push", Rendered("Hi", "There")),
    ("Hi", "There", "inapp", Rendered("Hi", "There")),
    ("Hi", "There", "sms", Rendered(None, "Hi: There")),
    (None, "There", "sms", Rendered(None, "There")),
    ("Hi", None, "sms", Rendered(None, "Hi")),
    ("Hi", None, "push", Rendered("Hi", None)),
    # user text is data, not a template
    ("{{ x }}", "{% if true %}y{% endif %}", "push",
     Rendered("{{ x }}", "{% if true %}y{% endif %}")),
    ("{{ x }}", "<b>&</b>", "email", Rendered("{{ x }}", "<b>&</b>")),
])
def test_passthrough_of_plain_title_and_body(title, body, channel, expected):
    # Given a notification without a template
    # When it is rendered for a channel
    # Then its own title and body are used as they are, shaped for the channel
    assert passthrough(title, body, channel) == expected


def test_passthrough_with_nothing_to_say_is_an_error():
    with pytest.raises(TemplateError, match="the notification renders nothing for push"):
        passthrough(None, "", "push")


def test_a_template_wins_over_the_notifications_own_text(tmp_path):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": 'title = "from the template"'})
    rendered = render_with(catalog, "t", title="own title", body="own body")
    assert rendered == Rendered("from the template", None)


def test_unknown_channel_is_an_error():
    with pytest.raises(TemplateError, match="unknown channel 'fax'"):
        passthrough("Hi", "There", "fax")


# --- rendering errors and safety --------------------------------------------


def test_missing_variable_names_the_variable(tmp_path):
    # Given a French template using {{ city }}
    catalog = catalog_of(tmp_path, {"welcome/1/fr.toml": 'title = "Bonjour de {{ city }}"'})
    # When it is rendered without that variable
    with pytest.raises(TemplateError) as raised:
        render_with(catalog, "welcome", locale="fr", data={"name": "Ana"})
    # Then the error names the template, its locale and the variable
    assert str(raised.value) == "template 'welcome@1' (fr): missing variable 'city'"


def test_missing_attribute_is_an_error(tmp_path):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": 'title = "{{ user.city }}"'})
    with pytest.raises(TemplateError, match=r"'t@1' \(en\): 'dict object' has no attribute"):
        render_with(catalog, "t", data={"user": {}})


def test_data_of_the_wrong_type_is_an_error_not_a_crash(tmp_path):
    # Given a template doing arithmetic on a variable
    catalog = catalog_of(tmp_path, {"t/1/en.toml": 'title = "{{ count - 1 }} more"'})
    # When the producer sent a string
    # Then it is a TemplateError (bad input), not a TypeError escaping the router
    with pytest.raises(TemplateError, match=r"template 't@1' \(en\): title: "):
        render_with(catalog, "t", data={"count": "3"})


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ name.__init__.__globals__ }}",
])
def test_sandbox_blocks_attribute_access(tmp_path, source):
    # Given a template reaching for Python internals
    catalog = catalog_of(tmp_path, {"t/1/en.toml": f'title = "{source}"'})
    # When it is rendered
    with pytest.raises(TemplateError) as raised:
        render_with(catalog, "t", data={"name": "Ana"})
    # Then the sandbox refuses it
    assert "template 't@1' (en): unsafe operation" in str(raised.value)


def test_autoescape_only_in_html(tmp_path):
    # Given a template that prints the same variable in every email part
    catalog = catalog_of(tmp_path, {"t/1/en.toml": (
        'email_subject = "{{ name }}"\nemail_body = "{{ name }}"\n'
        'email_html = "<p>{{ name }}</p>"')})
    # When the variable holds markup
    rendered = render_with(catalog, "t", channel="email", data={"name": "<b>Ana & co</b>"})
    # Then only the HTML part escapes it
    assert rendered == Rendered("<b>Ana & co</b>", "<b>Ana & co</b>",
                                "<p>&lt;b&gt;Ana &amp; co&lt;/b&gt;</p>")


@pytest.mark.parametrize(("text", "channel", "message"), [
    ('title = "{% if false %}x{% endif %}"\nbody = "  "', "email",
     "template 't@1' (en) renders nothing for email"),
    ('email_subject = "S"', "push", "template 't@1' (en) renders nothing for push"),
    ('push_title = "P"', "sms", "template 't@1' (en) renders nothing for sms"),
])
def test_rendering_nothing_is_an_error(tmp_path, text, channel, message):
    catalog = catalog_of(tmp_path, {"t/1/en.toml": text})
    with pytest.raises(TemplateError) as raised:
        render_with(catalog, "t", channel=channel)
    assert str(raised.value) == message


def test_rendered_text_is_stripped(tmp_path):
    # TOML multi-line strings start and end with line breaks nobody wants sent.
    catalog = catalog_of(tmp_path, {"t/1/en.toml": 'body = """\n  Hello {{ name }}\n\n"""'})
    assert render_with(catalog, "t", data={"name": "Ana"}).body == "Hello Ana"


# --- SMS --------------------------------------------------------------------

GSM7_NON_ASCII = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¡ÄÖÑÜ§¿äöñü"  # 40 characters


@pytest.mark.parametrize(("text", "segments"), [
    ("", 0),
    ("a", 1),
    # GSM-7: 160 in one segment, 153 per segment beyond
    ("a" * 160, 1),
    ("a" * 161, 2),
    ("a" * 306, 2),
    ("a" * 307, 3),
    # the non-ASCII basic set is still one septet each
    (GSM7_NON_ASCII * 4, 1),
    (GSM7_NON_ASCII * 4 + "\n", 2),
    # extension characters cost two septets
    ("€" * 80, 1),
    ("€" * 81, 2),
    ("[]{}^~\\|" * 10, 1),
    ("[]{}^~\\|" * 10 + "a", 2),
    ("a" * 159 + "€", 2),
    # ...and are never split across segments: 306 septets, but 152 | 2+151 | 1
    ("a" * 152 + "€" + "a" * 152, 3),
    # one character outside GSM-7 makes the whole text UCS-2: 70, then 67
    ("ç" * 70, 1),
    ("ç" * 71, 2),
    ("ç" * 134, 2),
    ("ç" * 135, 3),
    ("a" * 69 + "’", 1),
    ("a" * 70 + "’", 2),
    ("a" * 159 + "…", 3),
    # an emoji is two UTF-16 units, never split either
    ("😀" * 35, 1),
    ("😀" * 36, 2),
    ("a" * 66 + "😀" + "a" * 66, 3),
])
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


@pytest.mark.parametrize(("text", "max_segments", "expected"), [
    # fits: unchanged
    ("a" * 160, 1, "a" * 160),
    ("a" * 459, 3, "a" * 459),
    # GSM-7 is cut with "...", which keeps it GSM-7
    ("a" * 161, 1, "a" * 157 + "..."),
    ("a" * 500, 3, "a" * 456 + "..."),
    ("€" * 100, 1, "€" * 78 + "..."),
    # UCS-2 is cut with the one-unit "…"
    ("ç" * 71, 1, "ç" * 69 + "…"),
    ("ç" * 500, 2, "ç" * 133 + "…"),
    ("😀" * 40, 1, "😀" * 34 + "…"),
    # no dangling space before the ellipsis
    ("a" * 156 + " " + "b" * 10, 1, "a" * 156 + "..."),
])
def test_truncate_sms_to_the_segment_budget(text, max_segments, expected):
    # Given a text and a segment budget
    # When it is truncated
    truncated = truncate_sms(text, max_segments)
    # Then it is the longest prefix that fits, with its ellipsis
    assert truncated == expected
    assert sms_segments(truncated) <= max_segments


def test_truncate_sms_needs_a_segment():
    with pytest.raises(ValueError, match="at least 1"):
        truncate_sms("hello", 0)


@pytest.mark.parametrize("max_segments", [1, 2, 3])
def test_render_cuts_sms_to_the_budget(tmp_path, max_segments):
    # Given a template whose SMS grows with its data
    catalog = catalog_of(tmp_path, {"t/1/en.toml": 'sms = "{{ text }}"'})
    # When it renders far beyond the budget
    rendered = render_with(catalog, "t", channel="sms", data={"text": "a" * 1000},
                           sms_max_segments=max_segments)
    # Then the SMS fits, and says it was cut
    assert sms_segments(rendered.body) == max_segments
    assert rendered.body.endswith("...")


def test_passthrough_sms_is_cut_too():
    rendered = render(TemplateCatalog(), template=None, title="Alert", body="x" * 400, data={},
                      locale=None, channel="sms", sms_max_segments=1)
    assert rendered == Rendered(None, "Alert: " + "x" * 150 + "...")


# --- loading ----------------------------------------------------------------


@pytest.mark.parametrize("subdirectory", ["missing", "empty"])
def test_missing_or_empty_directory_gives_an_empty_catalog(tmp_path, subdirectory):
    (tmp_path / "empty").mkdir()
    assert load_catalog(tmp_path / subdirectory).names == []


def test_loose_and_hidden_files_are_not_templates(tmp_path):
    catalog = catalog_of(tmp_path, {"README.md": "# templates", "t/1/en.toml": 'title = "T"',
                                    "t/1/.en.toml.swp": "junk", "t/.DS_Store": "junk"})
    assert catalog.names == ["t"]


@pytest.mark.parametrize(("files", "bad_path", "message"), [
    ({"t/1/en.toml": 'title = "unclosed'}, "t/1/en.toml", "invalid TOML"),
    ({"t/1/en.toml": "title = 3"}, "t/1/en.toml", "title must be a string"),
    ({"t/1/en.toml": 'titel = "T"'}, "t/1/en.toml", "unknown keys ['titel']"),
    ({"t/1/en.toml": ""}, "t/1/en.toml", "no keys"),
    ({"t/1/en.toml": 'body = "{% if x %}open"'}, "t/1/en.toml", "body, line 1: Unexpected end"),
    ({"t/1/en.toml": 'email_html = "{{ name "'}, "t/1/en.toml", "email_html, line 1:"),
    ({"t/v2/en.toml": 'title = "T"'}, "t/v2", "expected a version directory"),
    ({"t/0/en.toml": 'title = "T"'}, "t/0", "expected a version directory"),
    ({"t/1/en.txt": 'title = "T"'}, "t/1/en.txt", "expected a <locale>.toml file"),
    ({"t/1/english.toml": 'title = "T"'}, "t/1/english.toml", "expected a <locale>.toml"),
    ({"t/1/pt-BR.toml": 'title = "T"', "t/1/pt_BR.toml": 'title = "T"'}, "t/1/pt_BR.toml",
     "locale 'pt_BR' defined twice"),
])
def test_malformed_template_names_the_file(tmp_path, files, bad_path, message):
    # Given a template directory with a mistake in it
    # When it is loaded
    with pytest.raises(TemplateError) as raised:
        catalog_of(tmp_path, files)
    # Then the error names the file and the mistake
    assert str(raised.value).startswith(f"{tmp_path / bad_path}: ")
    assert message in str(raised.value)


# --- the shipped templates --------------------------------------------------

EXAMPLES = [
    ("welcome@1", "en", {"name": "Ana"}, "Ana"),
    ("welcome@1", "fr", {"name": "Ana"}, "Ana"),
    ("welcome", "en", {"name": "Ana"}, "Ana"),
    ("welcome", "fr", {"name": "Ana"}, "Ana"),  # version 2 has English only
    ("new-sign-in", "en", {"city": "Lyon"}, "Lyon"),
    ("new-sign-in", "fr-CA", {"city": "Montréal"}, "Montréal"),
    ("digest", "en", {"count": 2, "items": [{"title": "Invoice", "body": "Paid"},
                                            {"title": "Reply", "body": "Bo said hi"}]}, "Invoice"),
]


def test_shipped_templates_load():
    catalog = load_catalog(SHIPPED)
    assert catalog.names == ["digest", "new-sign-in", "welcome"]


@pytest.mark.parametrize("channel", ["email", "push", "sms", "inapp"])
@pytest.mark.parametrize(("reference", "locale", "data", "mentions"), EXAMPLES)
def test_shipped_templates_render(reference, locale, data, mentions, channel):
    # Given the templates herald ships
    catalog = load_catalog(SHIPPED)
    # When each one renders for each channel with the data it documents
    rendered = render_with(catalog, reference, channel=channel, locale=locale, data=data)
    # Then it says something, mentions the data, and an SMS fits one segment
    text = " ".join(part for part in (rendered.title, rendered.body) if part)
    assert mentions in text or (channel == "sms" and reference == "digest")
    if channel == "sms":
        assert rendered.title is None and sms_segments(rendered.body) == 1


def test_shipped_examples_read_as_intended():
    catalog = load_catalog(SHIPPED)
    digest = {"count": 2, "items": [{"title": "Invoice", "body": "Paid"},
                                    {"title": "Reply", "body": "<Bo> said hi"}]}
    assert render_with(catalog, "digest", channel="push", data=digest) == Rendered(
        "2 new notifications", "Invoice and 1 more")
    assert render_with(catalog, "digest", channel="inapp", data=digest).body == (
        "- Invoice: Paid\n- Reply: <Bo> said hi")
    assert "<li><strong>Reply</strong> &lt;Bo&gt; said hi</li>" in render_with(
        catalog, "digest", channel="email", data=digest).html
    assert render_with(catalog, "new-sign-in", channel="sms", locale="fr",
                       data={"city": "Nîmes"}).body == (
        "Nouvelle connexion depuis Nîmes. Pas vous ? Changez votre mot de passe.")
    assert render_with(catalog, "welcome@1", channel="email", locale="fr",
                       data={"name": "Ana"}).title == "Bienvenue, Ana !"


def test_a_subject_only_email_repeats_the_subject_as_its_body() -> None:
    # Given a plain notification with a title and no body
    rendered = render(TemplateCatalog(), template=None, title="Invoice ready", body=None,
                      data={}, locale=None, channel="email")
    # Then the email still has content, as email providers require
    assert (rendered.title, rendered.body) == ("Invoice ready", "Invoice ready")
