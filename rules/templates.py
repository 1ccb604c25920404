"""What a notification says on each channel (router step 4).

A notification either names a template (``"welcome"`` for the highest
version, ``"welcome@2"`` for a pinned one) rendered with its ``data``, or
carries its own ``title``/``body``, which are used as they are: they are the
producer's data, never Jinja source. Either way the text is then shaped for
the channel, and an SMS is cut to its segment budget.

Templates live in TOML files, read once at start-up by :func:`load_catalog`::

    templates/<name>/<version>/<locale>.toml      e.g. templates/welcome/2/pt-BR.toml

A file holds any of the keys in :data:`TEMPLATE_KEYS`. A channel-specific key
wins over the generic one whenever the file has it, even if it renders empty:
an author may write ``push_title = ""`` to leave push without a title.
Rendered text is stripped of surrounding whitespace (TOML multi-line strings
bring line breaks), and text that is empty after that counts as absent.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.errors import InvalidEvent

#: The keys a template file may hold.
TEMPLATE_KEYS = frozenset({
    "title", "body", "email_subject", "email_body", "email_html",
    "push_title", "push_body", "sms", "inapp_title", "inapp_body",
})

#: Per channel, the keys tried in order for its title and its body, and its HTML key.
#: ``sms`` is the whole message, so an SMS has no title key of its own.
_CHANNEL_KEYS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "email": (("email_subject", "title"), ("email_body", "body"), "email_html"),
    "push": (("push_title", "title"), ("push_body", "body"), None),
    "inapp": (("inapp_title", "title"), ("inapp_body", "body"), None),
    "sms": (("title",), ("sms", "body"), None),
}

_VERSION = re.compile(r"[1-9][0-9]*")
_LOCALE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
_UNDEFINED_NAME = re.compile(r"'([^']+)' is undefined")

# GSM 03.38: the basic set costs one septet, the extension set two (escape +
# char). ESC itself is left out: it is not text.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")
# (one segment, per segment when concatenated), in septets or UTF-16 units.
_GSM7_LIMITS = (160, 153)
_UCS2_LIMITS = (70, 67)


class TemplateError(InvalidEvent):
    """A template is unknown, malformed, or cannot render with the notification's data."""


@dataclass(frozen=True)
class Rendered:
    """A notification's text on one channel.

    Email: ``title`` is the subject, ``body`` the text part, ``html`` the HTML
    part. Push and in-app: ``title`` and ``body``. SMS: only ``body``.
    """

    title: str | None
    body: str | None
    html: str | None = None


@dataclass(frozen=True)
class LocalizedTemplate:
    """One template file, compiled: a name, a version and a locale."""

    name: str
    version: int
    locale: str
    path: Path
    parts: Mapping[str, jinja2.Template]

    @property
    def label(self) -> str:
        """How error messages name it: ``'welcome@1' (fr)``."""
        return f"'{self.name}@{self.version}' ({self.locale})"

    def render(self, key: str, data: Mapping[str, Any]) -> str | None:
        """Render one key with ``data``; ``None`` when it renders only whitespace."""
        try:
            text = self.parts[key].render(data)
        except jinja2.UndefinedError as exc:
            # A sandbox refusal reaches us as an undefined value that raises
            # SecurityError, so it is caught below, not here.
            found = _UNDEFINED_NAME.fullmatch(exc.message or "")
            what = f"missing variable {found.group(1)!r}" if found else str(exc)
            raise TemplateError(f"template {self.label}: {what}") from exc
        except SecurityError as exc:
            raise TemplateError(f"template {self.label}: unsafe operation: {exc}") from exc
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError) as exc:
            # data comes from producers: a list where a number was expected
            # is bad input to dead-letter, not a crash of the router.
            raise TemplateError(f"template {self.label}: {key}: {exc}") from exc
        return text.strip() or None


class TemplateCatalog:
    """Every template herald knows, by name, version and locale."""

    def __init__(self, templates: Mapping[str, Mapping[int, Mapping[str, LocalizedTemplate]]]
                 | None = None, default_locale: str = "en") -> None:
        self.templates = templates or {}
        self.default_locale = default_locale

    @property
    def names(self) -> list[str]:
        """The template names, sorted."""
        return sorted(self.templates)

    def resolve(self, reference: str, locale: str | None) -> LocalizedTemplate:
        """The file for ``"name"`` or ``"name@version"`` in the best locale.

        Locales are tried exact (``pt-BR``), then language (``pt``), then the
        catalog's default; case and ``-``/``_`` do not matter.
        """
        name, _, pinned = reference.partition("@")
        if pinned and not _VERSION.fullmatch(pinned):
            raise TemplateError(f"invalid template reference {reference!r}")
        versions = self.templates.get(name)
        if not versions:
            raise TemplateError(f"unknown template {name!r}")
        version = int(pinned) if pinned else max(versions)
        if version not in versions:
            raise TemplateError(f"unknown version {version} of template {name!r}")
        wanted = _fallback_locales(locale, self.default_locale)
        for candidate in wanted:
            found = versions[version].get(_locale_key(candidate))
            if found is not None:
                return found
        nor = f" (nor {' nor '.join(repr(c) for c in wanted[1:])})" if len(wanted) > 1 else ""
        raise TemplateError(f"template '{name}@{version}' has no locale {wanted[0]!r}{nor}")


def load_catalog(directory: Path, *, default_locale: str = "en") -> TemplateCatalog:
    """Read and compile every template under ``directory``, once, at start-up.

    A missing or empty directory gives an empty catalog. Anything that looks
    like a mistake (a version directory that is not a positive integer, a
    file that is not ``<locale>.toml``, bad TOML, an unknown key, a Jinja
    syntax error) raises :class:`TemplateError` naming the file, so a typo
    fails the start rather than silently dropping a template.
    """
    # Immutable: a template may not change the data (the same dict renders
    # every channel), on top of the sandbox's ban on internals.
    plain = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    html = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=True)
    templates: dict[str, dict[int, dict[str, LocalizedTemplate]]] = {}
    if not directory.exists():
        return TemplateCatalog(templates, default_locale)
    if not directory.is_dir():
        raise TemplateError(f"{directory}: not a directory")
    # Loose files at the top (a README) are not templates.
    for name_dir in sorted(p for p in _visible(directory) if p.is_dir()):
        for version_dir in sorted(_visible(name_dir)):
            if not (version_dir.is_dir() and _VERSION.fullmatch(version_dir.name)):
                raise TemplateError(f"{version_dir}: expected a version directory (1, 2, ...)")
            for path in sorted(_visible(version_dir)):
                if not (path.is_file() and path.suffix == ".toml"
                        and _LOCALE.fullmatch(path.stem)):
                    raise TemplateError(f"{path}: expected a <locale>.toml file")
                found = _compile(path, name_dir.name, int(version_dir.name), plain, html)
                locales = templates.setdefault(found.name, {}).setdefault(found.version, {})
                if _locale_key(found.locale) in locales:
                    raise TemplateError(f"{path}: locale {found.locale!r} defined twice")
                locales[_locale_key(found.locale)] = found
    return TemplateCatalog(templates, default_locale)


def render(catalog: TemplateCatalog, *, template: str | None, title: str | None,
           body: str | None, data: Mapping[str, Any], locale: str | None, channel: str,
           sms_max_segments: int = 3) -> Rendered:
    """A notification's text on ``channel``, from its template or its own title/body.

    When ``template`` is set, ``title`` and ``body`` are ignored. An SMS is
    ``"{title}: {body}"`` unless the template has an ``sms`` key, and is cut
    to ``sms_max_segments`` (see :func:`truncate_sms`).
    """
    if channel not in _CHANNEL_KEYS:
        raise TemplateError(f"unknown channel {channel!r}")
    title_keys, body_keys, html_key = _CHANNEL_KEYS[channel]
    if template is None:
        source = "the notification"
        title, body, html = title or None, body or None, None
    else:
        found = catalog.resolve(template, locale)
        source = f"template {found.label}"
        if channel == "sms" and "sms" in found.parts:
            title_keys = ()  # an sms key is the whole message
        title = _render_first(found, title_keys, data)
        body = _render_first(found, body_keys, data)
        html = _render_first(found, (html_key,) if html_key else (), data)
    if channel == "sms":
        title, body = None, truncate_sms(": ".join(t for t in (title, body) if t),
                                         sms_max_segments) or None
    if title is None and body is None and html is None:
        raise TemplateError(f"{source} renders nothing for {channel}")
    if channel == "email" and body is None and html is None:
        body = title  # an email needs content: a subject-only message repeats it
    return Rendered(title, body, html)


def sms_segments(text: str) -> int:
    """How many SMS segments ``text`` is sent as; 0 for an empty text.

    GSM-7 text: 160 septets in one segment, 153 per segment beyond, with
    ``€ [ ] { } ^ ~ \\ |`` costing two. Any other character makes the whole
    text UCS-2: 70 UTF-16 units in one segment, 67 beyond (an emoji is two
    units). A character is never split across segments, as phones do it.
    """
    costs, (single, multi) = _costs(text)
    if sum(costs) <= single:
        return 1 if costs else 0
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments, used = segments + 1, 0
        used += cost
    return segments


def truncate_sms(text: str, max_segments: int) -> str:
    """``text`` cut to fit ``max_segments`` segments, ending in an ellipsis when cut.

    The ellipsis is ``...`` for GSM-7 text, since ``…`` is not GSM-7 and
    would turn the whole message into UCS-2 and more than halve its room; it
    is ``…`` (one unit) for text that is UCS-2 already.
    """
    if max_segments < 1:
        raise ValueError(f"max_segments must be at least 1, got {max_segments}")
    if sms_segments(text) <= max_segments:
        return text
    ellipsis = "..." if _is_gsm7(text) else "…"
    # Segments only grow as the prefix grows: bisect for the longest one that fits.
    low, high = 0, len(text)
    while low < high:
        middle = math.ceil((low + high) / 2)
        if sms_segments(text[:middle].rstrip() + ellipsis) <= max_segments:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ellipsis


def _render_first(found: LocalizedTemplate, keys: tuple[str, ...],
                  data: Mapping[str, Any]) -> str | None:
    key = next((k for k in keys if k in found.parts), None)
    return None if key is None else found.render(key, data)


def _compile(path: Path, name: str, version: int, plain: jinja2.Environment,
             html: jinja2.Environment) -> LocalizedTemplate:
    try:
        with path.open("rb") as stream:
            source = tomllib.load(stream)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: invalid TOML: {exc}") from exc
    unknown = sorted(set(source) - TEMPLATE_KEYS)
    if unknown:
        raise TemplateError(f"{path}: unknown keys {unknown}; expected some of "
                            f"{sorted(TEMPLATE_KEYS)}")
    if not source:
        raise TemplateError(f"{path}: no keys; expected some of {sorted(TEMPLATE_KEYS)}")
    parts: dict[str, jinja2.Template] = {}
    for key, text in source.items():
        if not isinstance(text, str):
            raise TemplateError(f"{path}: {key} must be a string")
        try:
            parts[key] = (html if key == "email_html" else plain).from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{path}: {key}, line {exc.lineno}: {exc.message}") from exc
    return LocalizedTemplate(name, version, path.stem, path, parts)


def _visible(directory: Path) -> list[Path]:
    # Dotfiles are editor and OS litter (.DS_Store, .swp), never templates.
    return [p for p in directory.iterdir() if not p.name.startswith(".")]


def _locale_key(locale: str) -> str:
    return locale.replace("_", "-").lower()


def _fallback_locales(locale: str | None, default: str) -> list[str]:
    wanted = [locale, re.split(r"[-_]", locale)[0]] if locale else []
    unique: list[str] = []
    for candidate in [*wanted, default]:
        if _locale_key(candidate) not in {_locale_key(u) for u in unique}:
            unique.append(candidate)
    return unique


def _is_gsm7(text: str) -> bool:
    return all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in text)


def _costs(text: str) -> tuple[list[int], tuple[int, int]]:
    """What each character costs, and the limits of the encoding ``text`` needs."""
    if _is_gsm7(text):
        return [2 if c in _GSM7_EXTENSION else 1 for c in text], _GSM7_LIMITS
    return [2 if ord(c) > 0xFFFF else 1 for c in text], _UCS2_LIMITS
