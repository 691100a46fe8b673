"""Every email and page renders in Dutch and English, strictly and safely."""

from __future__ import annotations

import email
import email.policy
import json
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
import ldap3
import pytest
from markdown_it import MarkdownIt
from sqlmodel import Session, select
from support import text_of

from approvals.requests import request_approvals
from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.cases import leaver_of
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    Case,
    Decision,
    RevocationPlanRecord,
)
from offboarding.domain.revocation import (
    inventory_all,
    load_plan,
    revoke_one,
    store_plan,
    verify_all,
)
from offboarding.domain.text import BIDI_CONTROLS, ZERO_WIDTH
from offboarding.notification import notify
from offboarding.notification.rendering import (
    SUPPORTED_LANGUAGES,
    RenderedEmail,
    default_templates_dir,
    describe,
    load_messages,
    pick_language,
    render_email,
    render_page,
    template_env,
)
from offboarding.wiring.services import Services, build_services
from offboarding.wiring.settings import Settings

LINK = "https://offboarding.example.nl/approvals/c-2025-0042?token=abc.def&lang=nl"
HOSTILE_NAME = '<script>alert("x")</script> Zoë'


class Elements(HTMLParser):
    """Collects every start tag with its attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def by_id(self, element_id: str) -> tuple[str, dict[str, str | None]]:
        matches = [(name, attrs) for name, attrs in self.tags if attrs.get("id") == element_id]
        assert len(matches) == 1, f"expected one element with id {element_id!r}"
        return matches[0]


class Text(HTMLParser):
    """The text a browser would show, entities decoded."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.feed(html)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_text(html: str) -> str:
    return "".join(Text(html).parts)


def text_links(text: str) -> list[str]:
    return re.findall(r"https?://\S+", text)


def html_links(html: str) -> list[str]:
    return [href for attrs in Elements(html).find("a") if (href := attrs.get("href"))]


def leaver(name: str = "Zoë Ëmans") -> dict[str, str]:
    return {"employee_id": "E1042", "display_name": name, "email": "zoe.emans@example.nl"}


PLAN = [
    {
        "connector": "directory",
        "kind": "membership",
        "label": "Lid van Finance",
        "target": "cn=finance,ou=groups,dc=example,dc=nl",
    },
    {
        "connector": "directory",
        "kind": "account",
        "label": "Account blokkeren",
        "target": "uid=zemans,ou=people,dc=example,dc=nl",
    },
    {
        "connector": "github",
        "kind": "membership",
        "label": "Team platform",
        "target": "acme/platform",
    },
]
PLAN_HASH = "3f9a1c0d7be2" + "0" * 52


def email_context(name: str, **overrides: Any) -> dict[str, Any]:
    requester = {"employee_id": "E0007", "display_name": "Mieke Jansen"}
    approver = {"employee_id": "E0011", "display_name": "Jeroen Bakker"}
    contexts: dict[str, dict[str, Any]] = {
        "approval_request": {
            "approver": {"display_name": approver["display_name"]},
            "leaver": leaver(),
            "requester": requester,
            "case_id": "c-2025-0042",
            "last_working_day": "2025-01-31",
            "urgent": False,
            "plan": PLAN,
            "plan_hash": PLAN_HASH,
            "link": LINK,
            "expires_at": "3 februari 2025, 17:00",
        },
        "case_completed": {
            "recipient": {"display_name": "Mieke Jansen"},
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "approver": approver,
            "requester": requester,
            "outcomes": [
                {"label": "Lid van Finance", "status": "revoked"},
                {"label": "Account blokkeren", "status": "already_done"},
            ],
            "checks": [
                {"name": "Geen groepslidmaatschappen", "passed": True, "detail": ""},
                {
                    "name": "Account geblokkeerd",
                    "passed": True,
                    "detail": "pwdAccountLockedTime gezet",
                },
            ],
            "completed_at": "2025-01-31 17:05",
            "clean": True,
        },
        "case_rejected": {
            "recipient": {"display_name": "Mieke Jansen"},
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "approver": {"display_name": approver["display_name"]},
            "reason": "Zoë blijft tot maart.\nZie het bericht van HR.",
            "decided_at": "2025-01-30 10:12",
        },
        "access_found_again": {
            "recipient": {"display_name": "Mieke Jansen"},
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "day": "7",
            "checked_at": "2025-02-07 09:15 CET",
            "found": [
                {
                    "connector": "directory",
                    "kind": "group",
                    "label": "Lid van Finance",
                    "target": "cn=finance,ou=groups,dc=example,dc=nl",
                }
            ],
            "follow_up": {"case_id": "c-2025-0077", "problem": ""},
        },
        "case_cancelled": {
            "recipient": {"display_name": "Jeroen Bakker"},
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "cancelled_by": requester,
            "reason": "Zoë blijft toch.\nHet ontslag is ingetrokken.",
            "cancelled_at": "2025-01-30 10:12 CET",
            "contained": ["Aanmelden bij LDAP"],
        },
        "needs_attention": {
            "recipient": {"display_name": "Mieke Jansen"},
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "problem": "De LDAP-server was niet bereikbaar.",
            "done": ["Lid van Finance"],
            "not_done": ["Account blokkeren", "Team platform"],
        },
    }
    return {**contexts[name], **overrides}


def page_context(name: str, **overrides: Any) -> dict[str, Any]:
    contexts: dict[str, dict[str, Any]] = {
        "approval_confirm": {
            "leaver": leaver(),
            "requester": {"employee_id": "E0007", "display_name": "Mieke Jansen"},
            "approver": {"employee_id": "E0011", "display_name": "Jeroen Bakker"},
            "case_id": "c-2025-0042",
            "last_working_day": "2025-01-31",
            "urgent": False,
            "plan": PLAN,
            "plan_hash": PLAN_HASH,
            "expires_at": "3 februari 2025, 17:00",
            "action_url": "/approvals/c-2025-0042/decision",
            "csrf_token": "csrf-Zm9vYmFy",
            "switch_url": "/approvals/c-2025-0042?token=abc&lang=en",
        },
        "approval_result": {
            "decision": "approve",
            "leaver": leaver(),
            "case_id": "c-2025-0042",
            "next_steps_key": "revoking",
        },
        "approval_error": {
            "reason_key": "expired",
            "detail": "",
            "switch_url": "/approvals/c-2025-0042?lang=en",
        },
    }
    return {**contexts[name], **overrides}


EMAILS = ["approval_request", "case_completed", "case_rejected", "needs_attention"]
EMAILS.append("case_cancelled")
EMAILS.append("access_found_again")  # the watch after a case
PAGES = ["approval_confirm", "approval_result", "approval_error"]
ERROR_KEYS = [
    "already_used",
    "expired",
    "invalid",
    "not_allowed",
    "plan_changed",
    "already_decided",
    "enough_approvals",
    "bad_request",
]


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return template_env()


@pytest.fixture(params=SUPPORTED_LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- emails -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMAILS)
def test_every_email_renders_in_both_languages(
    env: jinja2.Environment, name: str, language: str
) -> None:
    email = render_email(env, name, language, email_context(name))

    assert isinstance(email, RenderedEmail)
    assert email.subject
    assert "Zoë Ëmans" in email.subject
    assert not email.text.startswith(("Subject:", "\n"))
    assert "c-2025-0042" in email.text
    assert "c-2025-0042" in email.html
    assert email.html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{language}">' in email.html
    assert f"<title>{email.subject}</title>" in email.html


@pytest.mark.parametrize("name", EMAILS)
def test_html_emails_load_nothing_from_outside(
    env: jinja2.Environment, name: str, language: str
) -> None:
    html = render_email(env, name, language, email_context(name)).html
    elements = Elements(html)

    assert not [tag for tag, _ in elements.tags if tag in {"img", "script", "link", "iframe"}]
    assert not [attrs for _, attrs in elements.tags if "src" in attrs]
    assert set(html_links(html)) <= {LINK}


@pytest.mark.parametrize("name", EMAILS)
def test_every_email_variable_is_required(env: jinja2.Environment, name: str) -> None:
    full = email_context(name)
    for key in full:
        context = {k: v for k, v in full.items() if k != key}
        with pytest.raises(jinja2.UndefinedError):
            render_email(env, name, "nl", context)


def test_approval_request_explains_the_decision(env: jinja2.Environment, language: str) -> None:
    email = render_email(env, "approval_request", language, email_context("approval_request"))

    for body in (email.text, email.html):
        assert "3f9a1c0d7be2" in body
        assert PLAN_HASH not in body
        for item in PLAN:
            assert item["label"] in body
            assert item["target"] in body
        assert "Mieke Jansen" in body
        assert "3 februari 2025, 17:00" in body
    assert text_links(email.text) == [LINK]
    assert html_links(email.html) == [LINK]
    wording = {
        "nl": ["vier-ogenprincipe", "verandert nog niets", "één keer", "Verwachtte je dit"],
        "en": ["four-eyes principle", "does not change anything", "only once", "Not expecting"],
    }
    for phrase in wording[language]:
        assert phrase.lower() in email.text.lower()
        assert phrase.lower() in email.html.lower()


def test_urgent_request_says_instant_dismissal(env: jinja2.Environment, language: str) -> None:
    phrase = {"nl": "ontslag op staande voet", "en": "instant dismissal"}[language]
    calm = render_email(env, "approval_request", language, email_context("approval_request"))
    urgent = render_email(
        env, "approval_request", language, email_context("approval_request", urgent=True)
    )

    assert phrase not in calm.text.lower()
    assert phrase not in calm.html.lower()
    assert phrase in urgent.text.lower()
    assert phrase in urgent.html.lower()
    assert urgent.subject.startswith({"nl": "SPOED", "en": "URGENT"}[language])


def test_empty_plan_is_said_out_loud(env: jinja2.Environment, language: str) -> None:
    email = render_email(
        env, "approval_request", language, email_context("approval_request", plan=[])
    )
    phrase = {"nl": "Het plan is leeg", "en": "The plan is empty"}[language]
    assert phrase in email.text
    assert phrase in email.html


def test_completed_case_with_remaining_access_needs_attention(
    env: jinja2.Environment, language: str
) -> None:
    failing = [{"name": "Account geblokkeerd", "passed": False, "detail": "kan nog inloggen"}]
    clean = render_email(env, "case_completed", language, email_context("case_completed"))
    dirty = render_email(
        env,
        "case_completed",
        language,
        email_context("case_completed", clean=False, checks=failing),
    )
    alarm = {"nl": "niet alle toegang is weg", "en": "not all access is gone"}[language]

    assert alarm not in clean.text.lower()
    assert alarm in dirty.text.lower()
    assert alarm in dirty.html.lower()
    assert clean.subject != dirty.subject
    assert "kan nog inloggen" in dirty.text
    assert "kan nog inloggen" in dirty.html


def test_completed_case_marks_dry_runs(env: jinja2.Environment, language: str) -> None:
    outcomes = [{"label": "Lid van Finance", "status": "dry_run"}]
    email = render_email(
        env, "case_completed", language, email_context("case_completed", outcomes=outcomes)
    )
    phrase = {"nl": "proefdraai", "en": "dry run"}[language]
    assert phrase in email.text
    assert phrase in email.html


def test_rejection_says_nothing_was_revoked(env: jinja2.Environment, language: str) -> None:
    email = render_email(env, "case_rejected", language, email_context("case_rejected"))
    phrase = {"nl": "Er is niets ingetrokken", "en": "Nothing has been revoked"}[language]

    assert phrase in email.text
    assert phrase in email.html
    assert "Zoë blijft tot maart." in email.text
    assert "Zie het bericht van HR." in email.html


def test_needs_attention_lists_what_is_done_and_not(env: jinja2.Environment, language: str) -> None:
    email = render_email(env, "needs_attention", language, email_context("needs_attention"))

    for body in (email.text, email.html):
        assert "De LDAP-server was niet bereikbaar." in body
        for item in ["Lid van Finance", "Account blokkeren", "Team platform"]:
            assert item in body
    done, _, not_done = email.text.partition(
        {"nl": "NOG NIET GEDAAN", "en": "NOT DONE YET"}[language]
    )
    assert "Lid van Finance" in done
    assert "Account blokkeren" in not_done


@pytest.mark.parametrize("name", EMAILS)
def test_email_html_escapes_names_and_text_keeps_them(env: jinja2.Environment, name: str) -> None:
    context = email_context(name, leaver=leaver(HOSTILE_NAME))
    email = render_email(env, name, "en", context)

    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert HOSTILE_NAME in email.text
    assert HOSTILE_NAME in email.subject


def test_subject_line_is_required(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "hello.en.txt").write_text("Hello {{ name }}\n")
    (tmp_path / "email" / "hello.en.html").write_text("<p>Hello {{ name }}</p>\n")
    (tmp_path / "email" / "greeting.en.txt").write_text("Subject: Hi {{ name }}\n\nHello\n")
    (tmp_path / "email" / "greeting.en.html").write_text("<title>{{ subject }}</title>\n")
    env = template_env(tmp_path)

    with pytest.raises(jinja2.TemplateError, match="Subject:"):
        render_email(env, "hello", "en", {"name": "Ans"})
    email = render_email(env, "greeting", "en", {"name": "Ans & Bo"})
    assert email == RenderedEmail(
        subject="Hi Ans & Bo", text="Hello\n", html="<title>Hi Ans &amp; Bo</title>\n"
    )


def test_unsupported_language_is_refused(env: jinja2.Environment) -> None:
    with pytest.raises(ValueError, match="de"):
        render_email(env, "approval_request", "de", email_context("approval_request"))
    with pytest.raises(ValueError, match="de"):
        render_page(env, "approval_error", "de", page_context("approval_error"))


def test_default_templates_dir_is_the_repository_folder() -> None:
    assert default_templates_dir() == Path(__file__).resolve().parents[2] / "templates"
    assert (default_templates_dir() / "pages" / "base.html").is_file()


# --- pages --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_in_both_languages(
    env: jinja2.Environment, name: str, language: str
) -> None:
    html = render_page(env, name, language, page_context(name))
    elements = Elements(html)

    assert html.startswith("<!DOCTYPE html>")
    assert f'<html lang="{language}">' in html
    assert not [tag for tag, _ in elements.tags if tag in {"img", "script", "link", "iframe"}]
    assert not [attrs for _, attrs in elements.tags if "src" in attrs]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_variable_is_required(env: jinja2.Environment, name: str) -> None:
    full = page_context(name)
    for key in full:
        if key == "switch_url":
            continue
        context = {k: v for k, v in full.items() if k != key}
        with pytest.raises(jinja2.UndefinedError):
            render_page(env, name, "nl", context)


def test_language_switch_links_to_the_other_language(env: jinja2.Environment) -> None:
    context = page_context("approval_error")
    dutch = Elements(render_page(env, "approval_error", "nl", context)).find("a")
    english = Elements(render_page(env, "approval_error", "en", context)).find("a")

    assert dutch == [
        {
            "href": context["switch_url"],
            "hreflang": "en",
            "lang": "en",
            "title": "Deze pagina in het Engels",
        }
    ]
    assert english[0]["hreflang"] == "nl"
    result = render_page(env, "approval_result", "nl", page_context("approval_result"))
    assert Elements(result).find("a") == []


def test_confirm_page_has_the_decision_form(env: jinja2.Environment, language: str) -> None:
    context = page_context("approval_confirm")
    html = render_page(env, "approval_confirm", language, context)
    elements = Elements(html)

    [form] = elements.find("form")
    assert form == {"method": "post", "action": context["action_url"]}
    hidden = [attrs for attrs in elements.find("input") if attrs.get("type") == "hidden"]
    assert hidden == [{"type": "hidden", "name": "csrf_token", "value": "csrf-Zm9vYmFy"}]
    tag, reason = elements.by_id("reason")
    assert (tag, reason["name"]) == ("textarea", "reason")
    for element_id, value in [("approve-button", "approve"), ("reject-button", "reject")]:
        tag, button = elements.by_id(element_id)
        assert tag == "button"
        assert (button["type"], button["name"], button["value"]) == ("submit", "decision", value)
    required = {"nl": "verplicht als je afwijst", "en": "required if you reject"}[language]
    assert required in html


def test_confirm_page_shows_people_plan_and_fingerprint(
    env: jinja2.Environment, language: str
) -> None:
    html = render_page(env, "approval_confirm", language, page_context("approval_confirm"))

    for expected in ["Zoë Ëmans", "E1042", "Mieke Jansen", "Jeroen Bakker", "2025-01-31"]:
        assert expected in html
    for item in PLAN:
        assert item["label"] in html
        assert item["target"] in html
    assert '<code id="plan-fingerprint">3f9a1c0d7be2</code>' in html
    assert {"nl": "Lidmaatschap", "en": "Membership"}[language] in html


def test_confirm_page_flags_urgency(env: jinja2.Environment, language: str) -> None:
    phrase = {"nl": "Ontslag op staande voet", "en": "Instant dismissal"}[language]
    calm = render_page(env, "approval_confirm", language, page_context("approval_confirm"))
    urgent = render_page(
        env, "approval_confirm", language, page_context("approval_confirm", urgent=True)
    )
    assert phrase not in calm
    assert phrase in urgent


def test_confirm_page_shows_unknown_kinds_as_is(env: jinja2.Environment) -> None:
    plan = [{"connector": "vpn", "kind": "certificate", "label": "VPN", "target": "cn=zoe"}]
    html = render_page(env, "approval_confirm", "en", page_context("approval_confirm", plan=plan))
    assert "<td>certificate</td>" in html


@pytest.mark.parametrize(
    ("decision", "next_steps_key"),
    [("approve", "revoking"), ("approve", "resume_pending"), ("reject", "rejected")],
)
def test_result_page_says_what_happens_next(
    env: jinja2.Environment, language: str, decision: str, next_steps_key: str
) -> None:
    context = page_context("approval_result", decision=decision, next_steps_key=next_steps_key)
    html = render_page(env, "approval_result", language, context)
    messages = load_messages(env, language)

    assert f"<h1>{messages['result.title.' + decision]}</h1>" in html
    assert f'<p id="next-steps">{messages["result.next." + next_steps_key]}</p>' in html


@pytest.mark.parametrize("reason_key", ERROR_KEYS)
def test_error_page_explains_every_reason(
    env: jinja2.Environment, language: str, reason_key: str
) -> None:
    context = page_context(
        "approval_error", reason_key=reason_key, detail="token signature mismatch"
    )
    html = render_page(env, "approval_error", language, context)
    messages = load_messages(env, language)

    for part in ("title", "text", "action"):
        assert messages[f"error.{reason_key}.{part}"].replace("'", "&#39;") in html
    assert "token signature mismatch" in html


def test_error_page_without_detail_hides_it(env: jinja2.Environment) -> None:
    html = render_page(env, "approval_error", "en", page_context("approval_error"))
    assert "Technical details" not in html


def test_unknown_error_key_fails_loudly(env: jinja2.Environment) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_page(env, "approval_error", "en", page_context("approval_error", reason_key="oops"))


@pytest.mark.parametrize("name", PAGES)
def test_pages_escape_hostile_input(env: jinja2.Environment, name: str) -> None:
    context = page_context(name)
    if "leaver" in context:
        context["leaver"] = leaver(HOSTILE_NAME)
    else:
        context["detail"] = HOSTILE_NAME
    html = render_page(env, name, "nl", context)

    assert "<script>" not in html
    assert "&lt;script&gt;" in html


# --- message catalogs ---------------------------------------------------------------------


def catalog(language: str) -> dict[str, str]:
    path = default_templates_dir() / "pages" / f"messages.{language}.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_catalogs_have_exactly_the_same_keys() -> None:
    dutch, english = catalog("nl"), catalog("en")
    assert sorted(dutch) == sorted(english)


def test_catalogs_use_the_same_placeholders() -> None:
    dutch, english = catalog("nl"), catalog("en")
    placeholder = re.compile(r"%\((\w+)\)s")
    for key in dutch:
        assert set(placeholder.findall(dutch[key])) == set(placeholder.findall(english[key])), key
        assert dutch[key].strip(), key
        assert english[key].strip(), key


def test_catalogs_are_actually_translated() -> None:
    dutch, english = catalog("nl"), catalog("en")
    same = {key for key in dutch if dutch[key] == english[key]}
    # Brand names and words Dutch borrowed from English are the only identical entries.
    assert same <= {"site.name", "plan.kind.account"}


def test_every_catalog_key_a_page_names_exists(env: jinja2.Environment) -> None:
    pages = default_templates_dir() / "pages"
    named = set()
    for template in pages.glob("*.html"):
        named |= set(re.findall(r"""t\[["']([a-z_.]+)["']\]""", template.read_text()))
    assert named
    assert named <= set(catalog("nl"))


def test_broken_catalog_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "messages.en.json").write_text('{"a": {"nested": "no"}}')
    with pytest.raises(ValueError, match="flat"):
        load_messages(template_env(tmp_path), "en")


# --- language choice ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "default", "expected"),
    [
        ("nl", "en", "nl"),
        ("nl-NL", "en", "nl"),
        ("NL", "en", "nl"),
        ("nl_BE", "en", "nl"),
        ("en_GB", "nl", "en"),
        ("EN-us", "nl", "en"),
        ("  en  ", "nl", "en"),
        (None, "nl", "nl"),
        ("", "en", "en"),
        ("de-DE", "nl", "nl"),
        ("fr", "en", "en"),
        ("de-DE,de;q=0.9,en;q=0.8,nl;q=0.7", "nl", "en"),
        ("de-DE,en;q=0.5,nl;q=0.9", "en", "nl"),
        ("nl;q=0, en", "nl", "en"),
        ("en;q=bogus, nl", "en", "nl"),
        ("nl-NL, en-GB", "en", "nl"),
    ],
)
def test_pick_language(preferred: str | None, default: str, expected: str) -> None:
    assert pick_language(preferred, default) == expected


def test_pick_language_refuses_an_unsupported_default() -> None:
    with pytest.raises(ValueError, match="fr"):
        pick_language("nl", "fr")


def test_plan_steps_are_described_in_the_readers_language(env: jinja2.Environment) -> None:
    from connectors.base import AccessGrant, Effect, Leaver, Message
    from offboarding.domain.plan import build_plan

    dn = "uid=jdevries,ou=people,dc=example,dc=test"
    grants = [
        AccessGrant(
            connector="directory",
            kind="group",
            effect=Effect.MEMBERSHIP,
            system_id="5a1c-developers",
            account=dn,
            target="cn=developers,ou=groups,dc=example,dc=test",
            label=Message.of("ldap.grant.group", "Member of %(group)s", group="developers"),
        ),
        AccessGrant(
            connector="directory",
            kind="account",
            effect=Effect.SIGN_IN,
            system_id="9e2f-jdevries",
            account=dn,
            target=dn,
            label=Message.of("ldap.grant.account", "Sign-in as %(account)s", account="jdevries"),
        ),
    ]
    plan = build_plan(
        case_id="c1",
        leaver=Leaver(employee_id="E1042", email="j@x", display_name="Jan"),
        grants=grants,
    )
    context = {**email_context("approval_request"), "plan": plan.rows()}
    dutch = render_email(env, "approval_request", "nl", context)
    english = render_email(env, "approval_request", "en", context)
    assert "Lid van developers" in dutch.text and "Lid van developers" in dutch.html
    assert "Aanmelden als jdevries (account, uitschakelen)" in dutch.text
    assert "Lid van developers (groepslidmaatschap, intrekken)" in dutch.text
    assert "Member of developers" in english.text and "Sign-in as jdevries" in english.html
    assert "Member of developers" not in dutch.text  # the connector's English text is not used
    page = render_page(
        env, "approval_confirm", "nl", {**page_context("approval_confirm"), "plan": plan.rows()}
    )
    assert "Lid van developers" in page and "<td>uitschakelen</td>" in page
    unknown = {"kind": "api_token", "name": "x", "label": "GitHub token ghp_…"}
    assert describe(unknown, {"describe.membership": "Lid van %(name)s"}) == "GitHub token ghp_…"
    third_party = {"message": Message.of("example.grant.team", "Team %(team)s", team="platform")}
    assert describe(third_party, load_messages(env, "nl")) == "Team platform"  # no catalog entry


def test_cascaded_steps_are_shown_under_their_parent(env: jinja2.Environment) -> None:
    from connectors.base import AccessGrant, Effect, Leaver, Message
    from offboarding.domain.plan import build_plan

    def grant(kind: str, effect: Effect, name: str, parent: str | None = None) -> AccessGrant:
        return AccessGrant(
            connector="github",
            kind=kind,
            effect=effect,
            system_id=name,
            account="jdevries",
            target=name,
            label=Message.of(f"example.grant.{kind}", f"{kind} %(name)s", name=name),
            cascades_from=parent,
        )

    org = grant("org", Effect.SIGN_IN, "acme")
    plan = build_plan(
        case_id="c1",
        leaver=Leaver(employee_id="E1042", email="j@x", display_name="Jan"),
        grants=[grant("team", Effect.MEMBERSHIP, "platform", org.key), org],
    )
    assert [row["parent"] for row in plan.rows()] == ["", org.key]
    context = {**email_context("approval_request"), "plan": plan.rows()}
    dutch = render_email(env, "approval_request", "nl", context)
    assert "2. ↳ team platform (lidmaatschap, vervalt met de toegang hierboven)" in dutch.text
    page = render_page(
        env, "approval_confirm", "en", {**page_context("approval_confirm"), "plan": plan.rows()}
    )
    assert '<tr class="cascaded">' in page and "goes with the access above" in page


def test_check_lines_are_in_the_readers_language(env: jinja2.Environment) -> None:
    from connectors.base import Message

    checks = [
        {
            "connector": "directory",
            "name": Message.of("ldap.check.lockout_policy", "lockout policy enforced"),
            "passed": True,
            "detail": Message.of(
                "ldap.detail.policy_ok", "%(policy)s has pwdLockout: TRUE", policy="cn=default"
            ),
        },
        {
            "connector": "vpn",
            "name": Message.of("vpn.check.cert", "certificate revoked"),
            "passed": True,
            "detail": "",
        },
    ]
    context = email_context("case_completed", checks=checks)
    dutch = render_email(env, "case_completed", "nl", context)
    assert "directory: blokkeerbeleid actief \u2013 cn=default heeft pwdLockout: TRUE" in dutch.text
    assert "lockout policy" not in dutch.text and "blokkeerbeleid actief" in dutch.html
    assert "vpn: certificate revoked" in dutch.text  # a message without a catalog entry
    english = render_email(env, "case_completed", "en", context)
    line = "directory: lockout policy enforced \u2013 cn=default has pwdLockout: TRUE"
    assert line in english.text


def test_connector_catalogs_have_the_same_ids(env: jinja2.Environment) -> None:
    import json

    catalogs = {
        lang: json.loads((default_templates_dir() / f"connectors/messages.{lang}.json").read_text())
        for lang in ("en", "nl")
    }
    assert catalogs["en"].keys() == catalogs["nl"].keys()
    for key, english in catalogs["en"].items():
        params = sorted(re.findall(r"%\((\w+)\)s", english))
        assert sorted(re.findall(r"%\((\w+)\)s", catalogs["nl"][key])) == params, key


# --- names that try to look like something else -------------------------------------------

BIDI_NAME = "Jan \u202eseirf.exe"  # shows as "Jan exe.fries" where the override works
MARKDOWN_NAME = "[x](http://evil) **boss**"
HIDDEN = BIDI_CONTROLS | ZERO_WIDTH


def hidden_in(*texts: str) -> set[str]:
    return {char for text in texts for char in text if char in HIDDEN}


def render_markdown(text: str) -> str:
    """CommonMark with GitHub's tables and strikethrough, as Prefect's artifact view renders."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)


def with_hostile_people(name: str, context: dict[str, Any]) -> dict[str, Any]:
    """Every person in ``context`` renamed the way a directory entry could be."""
    people = {
        "leaver": {**leaver(), "display_name": BIDI_NAME},
        "requester": {"employee_id": "E0007", "display_name": "Mieke \u2066Jansen\u2069"},
        "approver": {"employee_id": "E0011", "display_name": "Jeroen\u200d Bakker\u202c"},
        "recipient": {"display_name": "\ufeffMieke\u200b Jansen"},
    }
    return {
        **context,
        **{key: {**context[key], **value} for key, value in people.items() if key in context},
    }


@pytest.mark.parametrize("name", EMAILS)
def test_emails_show_no_bidi_or_zero_width_character(
    env: jinja2.Environment, name: str, language: str
) -> None:
    email = render_email(env, name, language, with_hostile_people(name, email_context(name)))

    assert hidden_in(email.subject, email.text, email.html) == set()
    assert "Jan seirf.exe" in email.subject
    assert "Jan seirf.exe" in email.text
    assert "Jan seirf.exe" in email.html


@pytest.mark.parametrize("name", PAGES)
def test_pages_show_no_bidi_or_zero_width_character(
    env: jinja2.Environment, name: str, language: str
) -> None:
    context = with_hostile_people(name, page_context(name))
    if "leaver" not in context:
        context["detail"] = "token \u202eexe.dilavni"
    html = render_page(env, name, language, context)

    assert hidden_in(html) == set()


def test_a_line_break_in_a_name_cannot_forge_a_line(env: jinja2.Environment) -> None:
    context = email_context(
        "approval_request",
        leaver=leaver("Zoë\nËmans"),
        requester={"employee_id": "E0007", "display_name": "Mieke\r\nCase number: c-fake"},
    )
    email = render_email(env, "approval_request", "en", context)

    assert email.subject == "Approval needed: revoke access for Zoë Ëmans"
    assert "Mieke Case number: c-fake (E0007)" in email.text
    assert [line for line in email.text.splitlines() if line.startswith("Case number:")] == [
        "Case number:      c-2025-0042"
    ]


def test_free_text_keeps_its_lines_but_not_its_controls(
    env: jinja2.Environment, language: str
) -> None:
    reason = "Zoë blijft\u202e tot maart.\r\nZie het\u200b bericht van HR."
    rejected = render_email(
        env, "case_rejected", language, email_context("case_rejected", reason=reason)
    )
    problem = "LDAP:\n\u2066connection refused\u2069"
    attention = render_email(
        env, "needs_attention", language, email_context("needs_attention", problem=problem)
    )

    assert "\n    Zoë blijft tot maart.\n    Zie het bericht van HR.\n" in rejected.text
    assert ">Zoë blijft tot maart.\nZie het bericht van HR.</blockquote>" in rejected.html
    assert "\n    LDAP:\n    connection refused\n" in attention.text
    assert ">LDAP:\nconnection refused</blockquote>" in attention.html
    assert hidden_in(rejected.text, rejected.html, attention.text, attention.html) == set()


def test_free_text_is_still_html_escaped(env: jinja2.Environment) -> None:
    context = email_context("case_rejected", reason="<b>nee</b>\n& klaar")
    email = render_email(env, "case_rejected", "nl", context)

    assert ">&lt;b&gt;nee&lt;/b&gt;\n&amp; klaar</blockquote>" in email.html
    assert "    <b>nee</b>\n    & klaar" in email.text


def test_free_text_filters_keep_required_variables_required(env: jinja2.Environment) -> None:
    template = env.from_string("{{ reason | multiline(indent=2) }}{{ missing | md_code }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(reason="a\nb")


def test_values_that_are_not_text_print_as_before(env: jinja2.Environment) -> None:
    template = env.from_string("{{ n }} {{ x }} {{ flag }} {{ nothing }} {{ day }}")

    assert template.render(n=3, x=1.5, flag=True, nothing=None, day=date(2025, 1, 31)) == (
        "3 1.5 True None 2025-01-31"
    )


def evidence_context(**overrides: Any) -> dict[str, Any]:
    context: dict[str, Any] = {
        "case": {
            "id": "c-2025-0042",
            "employee_id": "E1042",
            "display_name": MARKDOWN_NAME,
            "last_working_day": "2025-01-31",
            "urgent": False,
        },
        "requester": {"display_name": BIDI_NAME, "employee_id": "E0007"},
        "approver": {"display_name": "Noor | **de Groot**\n| fake | row |", "employee_id": "E1_7"},
        "plan_hash": PLAN_HASH,
        "plan_version": 1,
        "outcomes": [
            {"label": "Lid van [x](http://evil)", "kind": "membership", "name": "*admins*"},
        ],
        "failures": ["github: team <b>platform</b>"],
        "remaining": ["Member of ![p](http://evil/p.png)"],
        "checks": [
            {"name": "directory: no `groups`", "passed": False, "detail": "still in # admins"},
            {"name": "directory: locked", "passed": True, "detail": ""},
        ],
        "clean": False,
        "generated_at": "2025-01-31 17:05:00 UTC",
    }
    context["outcomes"][0]["status"] = "revoked"
    return {**context, **overrides}


def test_evidence_report_shows_names_and_labels_literally(
    env: jinja2.Environment, language: str
) -> None:
    markdown = env.get_template(f"reports/evidence.{language}.md").render(
        **evidence_context(), t=load_messages(env, language)
    )
    rendered = render_markdown(markdown)
    elements = Elements(rendered)

    assert hidden_in(markdown) == set()
    assert elements.find("a") == [] and elements.find("img") == [] and elements.find("b") == []
    assert [tag for tag, _ in elements.tags if tag == "em"] == []
    shown = html_text(rendered)
    for literal in [
        f"{MARKDOWN_NAME} (E1042)",
        "Jan seirf.exe (E0007)",
        "Noor | **de Groot** | fake | row | (E1_7)",
        "*admins*",
        "github: team <b>platform</b>",
        "Member of ![p](http://evil/p.png)",
        "directory: no `groups`",
        "still in # admins",
    ]:
        assert literal in shown
    assert len(elements.find("h1")) == 1
    assert len(elements.find("h2")) == 2  # the steps and the verification, nothing injected
    rows = re.findall(r"<tr>(.*?)</tr>", rendered, flags=re.S)
    assert [len(re.findall(r"<t[dh]>", row)) for row in rows] == [2] * 8 + [2] * 3 + [3] * 3
    # the report's own emphasis still works
    assert (
        re.findall(r"<strong>(.*?)</strong>", rendered)
        == {
            "en": ["Needs attention: access remains or a step failed", "failed", "no"],
            "nl": ["Actie nodig: er is nog toegang of een stap is mislukt", "mislukt", "nee"],
        }[language]
    )
    assert f"<code>{PLAN_HASH}</code>" in rendered
    assert "<code>c-2025-0042</code>" in rendered
    assert "Member of ![p](http://evil/p.png)</p>" in rendered  # its own paragraph


def test_markdown_code_spans_hold_any_backticks(env: jinja2.Environment) -> None:
    template = env.from_string("{{ a | md_code }} {{ b | md_code }}")
    markdown = template.render(a="c`1", b="`x``")
    assert render_markdown(markdown) == "<p><code>c`1</code> <code>`x``</code></p>\n"


# --- the same, end to end: a case in the database, people from a real directory -----------


@pytest.fixture
def hostile_directory(tmp_path: Path) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    """The demo organisation, where the requester, one approver and one group have odd names."""
    with LocalDirectory.start(tmp_path / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
        org = seed_demo_org(d, password=secrets.token_urlsafe(12))
        conn = d.admin_connection()
        try:
            for uid, name in [("hbakker", "Hanna\nApproved by: CEO"), ("lsmit", MARKDOWN_NAME)]:
                conn.modify(
                    f"uid={uid},{d.users_base}", {"displayName": [(ldap3.MODIFY_REPLACE, [name])]}
                )
            conn.add(
                f"cn=**root** \u202eadmins,{d.groups_base}",
                ["groupOfNames"],
                {"cn": "**root** \u202eadmins", "member": [org.leaver_dn]},
            )
        finally:
            conn.unbind()
        yield d, org


def outbox_messages(services: Services) -> list[EmailMessage]:
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for path in sorted(services.settings.outbox_dir.glob("*.eml"))
    ]


def test_names_from_the_directory_are_neutralised_when_shown(
    tmp_path: Path, hostile_directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    directory, org = hostile_directory
    settings = Settings(
        home=tmp_path / "home",
        connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
    )
    services = build_services(settings)
    # stored as an older intake would have: the name still carries its override
    case = Case(
        event_id="evt-hostile",
        employee_id=org.leaver_id,
        employee_email=org.leaver_email,
        display_name=BIDI_NAME,
        requested_by=org.requester_id,
        last_working_day=date.today(),
        occurred_at=datetime.now(UTC),
    )
    with Session(services.engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    leaver_ = leaver_of(case)
    record = store_plan(services, case, leaver_, inventory_all(services, leaver_))

    request_approvals(services, case, record)
    with Session(services.engine) as session:
        request = session.exec(
            select(ApprovalRequest).where(ApprovalRequest.approver_id == "E1004")
        ).one()
        session.add(
            ApprovalDecision(
                case_id=case.id,
                request_id=request.id,
                plan_hash=record.plan_hash,
                approver_id="E1004",
                decision=Decision.APPROVE,
            )
        )
        session.commit()
    grants = load_plan(record).steps
    outcomes = [
        revoke_one(services, case_id=case.id, plan_id=record.id, grant=step.grant)
        for step in grants
    ]
    report = verify_all(services, case.id, leaver_)
    notify.completed(services, case, record, outcomes, report)

    messages = outbox_messages(services)
    assert len(messages) == 3 + 2  # three approval requests, then requester and approver
    for message in messages:
        subject = str(message["Subject"])
        plain, html_part = message.get_body(("plain",)), message.get_body(("html",))
        assert plain is not None and html_part is not None
        text, html = plain.get_content(), html_part.get_content()
        assert hidden_in(subject, text, html) == set()
        assert "Jan seirf.exe" in subject
        assert not [line for line in text.splitlines() if line.startswith("Approved by: CEO")]
        assert not [link for link in html_links(html) if "evil" in link]
    [completed] = [m for m in messages if str(m["To"]) == "hbakker@example.test"]
    assert "Goedgekeurd door:        [x](http://evil) **boss** (E1004)" in text_of(completed)

    markdown = notify.evidence_markdown(services, case, record, outcomes, report, [])
    rendered = render_markdown(markdown)
    assert hidden_in(markdown) == set()
    assert Elements(rendered).find("a") == []
    shown = html_text(rendered)
    assert f"{MARKDOWN_NAME} (E1004)" in shown
    assert "Hanna Approved by: CEO (E0007)" in shown
    assert "Member of **root** admins" in shown
    assert "<strong>boss</strong>" not in rendered and "<strong>root</strong>" not in rendered

    for description in [
        notify.artifact_description("plan", case, record),
        notify.artifact_description("evidence", case),
    ]:
        assert hidden_in(description) == set()
        assert "Jan seirf.exe" in html_text(render_markdown(description))
    assert notify.artifact_description("evidence", case) == r"Evidence for E1042 (Jan seirf\.exe)"


def test_artifact_descriptions_escape_markdown() -> None:
    case = Case(
        event_id="evt",
        employee_id="E_1042",
        employee_email="j@example.test",
        display_name=MARKDOWN_NAME,
        requested_by="E0007",
        last_working_day=date(2025, 1, 31),
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    record = RevocationPlanRecord(case_id=case.id, version=2, plan_hash=PLAN_HASH, canonical="{}")

    plan = notify.artifact_description("plan", case, record)
    evidence = notify.artifact_description("evidence", case)

    assert plan == (
        r"Revocation plan v2 for E\_1042 (\[x\]\(http://evil\) \*\*boss\*\*); "
        f"SHA-256 {PLAN_HASH}"
    )
    assert render_markdown(evidence) == ("<p>Evidence for E_1042 ([x](http://evil) **boss**)</p>\n")
    with pytest.raises(ValueError, match="plan record"):
        notify.artifact_description("plan", case)


# --- the deputy pages (approvals/deputy_pages.py) ---------------------------------------

DEPUTY_PAGES: dict[str, dict[str, Any]] = {
    "deputy_form": {
        "manager": {"employee_id": "E1004", "display_name": HOSTILE_NAME},
        "current": [
            {
                "deputy": "Noor de Groot (E1007)",
                "starts_at": "2026-12-01 00:00 CET",
                "ends_at": "2026-12-08 00:00 CET",
            }
        ],
        "managers_only": True,
        "zone": "Europe/Amsterdam",
        "problem": "overlap",
        "action_url": "/approvals/deputy/abc",
        "csrf_token": "csrf-Zm9vYmFy",
        "switch_url": "/approvals/deputy/abc?lang=en",
    },
    "deputy_result": {
        "manager": {"employee_id": "E1004", "display_name": "Lars Smit"},
        "deputy": {"employee_id": "E1016", "display_name": HOSTILE_NAME},
        "starts_at": "2026-12-01 00:00 CET",
        "ends_at": "2026-12-08 00:00 CET",
    },
}
DEPUTY_PROBLEMS = [
    "self",
    "order",
    "over",
    "too_long",
    "unknown",
    "no_email",
    "not_manager",
    "not_eligible",
    "overlap",
    "dates",
    "other",
]


@pytest.mark.parametrize("name", sorted(DEPUTY_PAGES))
def test_every_deputy_page_renders_in_both_languages_and_needs_its_variables(
    env: jinja2.Environment, name: str, language: str
) -> None:
    html = render_page(env, name, language, DEPUTY_PAGES[name])
    assert html.startswith("<!DOCTYPE html>") and f'<html lang="{language}">' in html
    assert "<script>" not in html and "&lt;script&gt;" in html  # names are escaped
    assert not [t for t, _ in Elements(html).tags if t in {"img", "script", "link", "iframe"}]
    for key in DEPUTY_PAGES[name]:
        if key == "switch_url":
            continue
        context = {k: v for k, v in DEPUTY_PAGES[name].items() if k != key}
        with pytest.raises(jinja2.UndefinedError):
            render_page(env, name, language, context)


@pytest.mark.parametrize("problem", DEPUTY_PROBLEMS)
def test_every_deputy_problem_is_said_in_both_languages(
    env: jinja2.Environment, problem: str
) -> None:
    said = {
        lang: html_text(
            render_page(
                env, "deputy_form", lang, {**DEPUTY_PAGES["deputy_form"], "problem": problem}
            )
        )
        for lang in SUPPORTED_LANGUAGES
    }
    assert said["nl"] != said["en"]
    for lang in SUPPORTED_LANGUAGES:
        assert load_messages(env, lang)[f"deputy.problem.{problem}"] in said[lang]


def test_confirm_page_says_who_a_deputy_stands_in_for_and_the_count(
    env: jinja2.Environment, language: str
) -> None:
    context = {
        **page_context("approval_confirm"),
        "deputy_for": ["Lars Smit"],
        "approvals": {"given": 1, "required": 2},
    }
    text = html_text(render_page(env, "approval_confirm", language, context))
    assert "Lars Smit" in text
    assert ("1 of the 2" if language == "en" else "1 van de 2") in text
