"""Render the emails and approval pages from the top-level ``templates/`` folder.

Emails are ``.txt``/``.html`` pairs per language: ``email/{name}.{lang}.txt`` and
``email/{name}.{lang}.html``. The subject lives in the text template: its first
line must read ``Subject: ...`` and is cut from the body (a blank line after it
is dropped too). The HTML template gets that subject as ``subject`` (for its
``<title>``) and both get ``lang``.

Pages are one template per page, ``pages/{name}.html``, for every language: all
their words come from the flat message catalogs ``pages/messages.{lang}.json``,
injected as ``t`` together with ``lang``. The catalogs carry the same keys, so
the Dutch and English pages cannot drift apart in structure.

What connectors say (grant labels, check names and details) arrives as a structured
``connectors.base.Message``; the catalogs ``connectors/messages.{lang}.json`` translate
its id, merged into ``t``. The ``say`` filter renders one (a message without a catalog
entry falls back to its own English text), ``describe`` renders a plan step or outcome,
``kind_label`` and ``action_label`` its kind and action.

Every value a template prints passes ``finalize`` first, because names and other text
come from people and directories (see ``offboarding.domain.text``): it is put on one line
without invisible controls, and in Markdown templates (``*.md``) its Markdown is
escaped too. HTML is then escaped as usual. Two filters say otherwise where needed:
``multiline`` keeps a free text's line breaks (``{{ reason | multiline(indent=4) }}``),
``md_code`` prints a Markdown code span (``{{ case.id | md_code }}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import Context
from markupsafe import Markup

from connectors.base import Message, format_message
from offboarding.domain.text import markdown_escape, safe_display, safe_multiline

SUPPORTED_LANGUAGES = ("nl", "en")

SUBJECT_PREFIX = "Subject:"


def default_templates_dir() -> Path:
    """The repository's top-level ``templates/`` folder."""
    return Path(__file__).resolve().parents[2] / "templates"


def template_env(templates_dir: Path | None = None) -> jinja2.Environment:
    """A Jinja2 environment that fails on any missing variable and escapes HTML only."""
    directory = templates_dir if templates_dir is not None else default_templates_dir()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    env.filters["describe"] = describe
    env.filters["say"] = say
    env.filters["kind_label"] = kind_label
    env.filters["action_label"] = action_label
    env.filters["multiline"] = multiline
    env.filters["md_code"] = md_code
    return env


@cache
def shared_templates() -> jinja2.Environment:
    """This process's environment for the repository's templates: each template is compiled
    once per process, not once per email (a warm starter compiles them all before it forks)."""
    return template_env()


def compile_all(env: jinja2.Environment) -> int:
    """Compile every template `env` can list (what `shared_templates` keeps); returns how many."""
    compiled = 0
    for name in env.list_templates():
        try:
            env.get_template(name)
        except jinja2.TemplateError:
            continue  # not a template of ours (or broken: its first use says so)
        compiled += 1
    return compiled


class Prepared(str):
    """Text a filter has already made safe for its place; ``finalize`` leaves it as it is.

    HTML templates still escape it.
    """

    __slots__ = ()


@jinja2.pass_context
def finalize(context: Context, value: Any) -> Any:
    """What a template prints of ``value``: one line, no invisible controls, Markdown literal.

    Markup (a macro's or ``caller()``'s output) keeps its lines: the values inside it were
    finalized when it was rendered; only stray invisible characters are taken out.
    """
    if isinstance(value, Prepared | jinja2.Undefined) or value is None:
        return value
    if isinstance(value, Markup):
        # Taking invisible characters out of escaped HTML cannot add markup to it.
        return Markup(safe_multiline(str(value)))  # noqa: S704
    if not isinstance(value, str):
        if isinstance(value, int | float):  # bool too
            return value
        value = str(value)
    if context.name is not None and context.name.endswith(".md"):
        return markdown_escape(value)
    return safe_display(value)


def multiline(value: object, indent: int = 0) -> Prepared:
    """Free text that keeps its line breaks, each non-blank line indented by ``indent`` spaces.

    Apart from the line breaks it is cleaned as every other value is (``safe_multiline``).
    For emails and pages: in a Markdown template it would not be Markdown-escaped.
    """
    prefix = " " * indent
    lines = safe_multiline(str(value)).split("\n")
    return Prepared("\n".join(prefix + line if line.strip() else "" for line in lines))


def md_code(value: object) -> Prepared:
    """``value`` as a Markdown code span, fenced by more backticks than it holds in a row."""
    text = safe_display(str(value))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return Prepared(f"{fence}{padding}{text}{padding}{fence}")


def say(value: object, messages: Mapping[str, str]) -> str:
    """A connector's message in the reader's language: its id's phrase from the catalog,
    filled with its parameters; its own English text when the catalog has no such id.
    Plain text (and nothing) is shown as it is."""
    if value is None or isinstance(value, str):
        return value or ""
    message = value if isinstance(value, Message) else Message.model_validate(value)
    phrase = messages.get(message.id) if message.id else None
    if phrase is None:
        return message.text
    return format_message(phrase, message.params)


def describe(item: Mapping[str, Any], messages: Mapping[str, str]) -> str:
    """A plan step or outcome in the reader's language: "Lid van developers".

    Renders the connector's structured ``message`` (see ``say``); items without one (older
    stored rows) use the catalog's ``describe.<kind>`` phrase with the short ``name``, else
    their ``label``.
    """
    if item.get("message"):
        return say(item["message"], messages)
    phrase = messages.get(f"describe.{item.get('kind')}")
    name = item.get("name")
    if phrase and name:
        return phrase % {"name": name}
    return str(item.get("label", ""))


def kind_label(item: Mapping[str, Any], messages: Mapping[str, str]) -> str:
    """What kind of access a step is, in the reader's language: the catalog's name for the
    connector's kind, else for its effect (the closed set the core knows), else the kind."""
    kind = str(item.get("kind", ""))
    found = messages.get(f"plan.kind.{kind}") or messages.get(f"plan.effect.{item.get('effect')}")
    return found or kind


def action_label(item: Mapping[str, Any], messages: Mapping[str, str]) -> str:
    """What the step does, in the reader's language ("goes with ..." for a cascaded step)."""
    if item.get("parent"):
        return messages.get("plan.action.cascaded", "goes with the access above")
    action = str(item.get("action", ""))
    return messages.get(f"plan.action.{action}", action)


def pick_language(preferred: str | None, default: str) -> str:
    """The supported language closest to ``preferred``, else ``default``.

    ``preferred`` may be a tag such as ``"nl-NL"``, ``"NL"`` or ``"en_GB"``, or an
    ``Accept-Language`` header value (``"de-DE,en;q=0.8,nl;q=0.9"``), in which
    case the highest-weighted supported language wins.
    """
    if default not in SUPPORTED_LANGUAGES:
        raise ValueError(f"default language {default!r} is not one of {SUPPORTED_LANGUAGES}")
    if not preferred:
        return default
    ranked: list[tuple[float, int, str]] = []
    for position, entry in enumerate(preferred.split(",")):
        tag, _, params = entry.partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        language = tag.strip().replace("_", "-").split("-")[0].lower()
        if language in SUPPORTED_LANGUAGES and weight > 0:
            ranked.append((-weight, position, language))
    return min(ranked)[2] if ranked else default


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def _check_language(language: str) -> None:
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"language {language!r} is not one of {SUPPORTED_LANGUAGES}")


def _split_subject(rendered: str, template_name: str) -> tuple[str, str]:
    first_line, _, body = rendered.partition("\n")
    if not first_line.startswith(SUBJECT_PREFIX):
        raise jinja2.TemplateError(
            f"{template_name} must start with a line '{SUBJECT_PREFIX} ...' "
            "giving the email's subject"
        )
    subject = first_line.removeprefix(SUBJECT_PREFIX).strip()
    if not subject:
        raise jinja2.TemplateError(f"{template_name} renders an empty subject")
    return subject, body.lstrip("\n")


def render_email(
    env: jinja2.Environment, name: str, language: str, context: Mapping[str, Any]
) -> RenderedEmail:
    """Render ``email/{name}.{language}.txt`` and ``.html`` into one email."""
    _check_language(language)
    text_name = f"email/{name}.{language}.txt"
    try:
        messages = load_messages(env, language)  # phrases shared with the pages
    except jinja2.TemplateNotFound:
        messages = {}
    rendered_text = env.get_template(text_name).render({**context, "lang": language, "t": messages})
    subject, text = _split_subject(rendered_text, text_name)
    html = env.get_template(f"email/{name}.{language}.html").render(
        {**context, "lang": language, "subject": subject, "t": messages}
    )
    return RenderedEmail(subject=subject, text=text, html=html)


def load_messages(env: jinja2.Environment, language: str) -> dict[str, str]:
    """The page message catalog ``pages/messages.{language}.json``, with what connectors
    say merged in: every ``connectors/*.{language}.json`` (one file per connector family,
    ``connectors/messages.{language}.json`` for the shared words). A key defined twice is
    an error naming both files."""
    _check_language(language)
    merged = _catalog(env, f"pages/messages.{language}.json")
    origin = dict.fromkeys(merged, f"pages/messages.{language}.json")
    for name in connector_catalogs(env, language):
        for key, phrase in _catalog(env, name).items():
            if key in origin:
                raise ValueError(f"{name} reuses the key {key!r} of {origin[key]}")
            origin[key] = name
            merged[key] = phrase
    return merged


def connector_catalogs(env: jinja2.Environment, language: str) -> list[str]:
    """The connector message catalogs for one language, sorted."""
    if env.loader is None:
        return []
    suffix = f".{language}.json"
    try:
        names = env.loader.list_templates()
    except TypeError:  # a loader that cannot list: the shared catalog only
        names = [f"connectors/messages{suffix}"]
    return sorted(
        n for n in names if n.startswith("connectors/") and n.endswith(suffix) and n.count("/") == 1
    )


def _catalog(env: jinja2.Environment, name: str) -> dict[str, str]:
    if env.loader is None:
        raise ValueError("the template environment has no loader")
    source, _, _ = env.loader.get_source(env, name)
    messages = json.loads(source)
    if not isinstance(messages, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in messages.items()
    ):
        raise ValueError(f"{name} must be one flat JSON object of strings")
    return messages


def render_page(
    env: jinja2.Environment, name: str, language: str, context: Mapping[str, Any]
) -> str:
    """Render ``pages/{name}.html`` in ``language``, with its catalog as ``t``."""
    messages = load_messages(env, language)
    return env.get_template(f"pages/{name}.html").render(
        {**context, "t": messages, "lang": language}
    )
