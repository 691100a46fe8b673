"""The work instruction is generated from the settings the service runs: every configured
system and manual step is in it, in Dutch and English, and its version follows the policy."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import jinja2
import pytest
from typer.testing import CliRunner

from offboarding.cli import app
from offboarding.cli import workinstruction as _registered  # noqa: F401 - adds the command
from offboarding.notification.rendering import template_env
from offboarding.wiring.settings import Settings
from offboarding.workinstruction.document import WorkInstruction, build
from offboarding.workinstruction.render import Format, render, render_text

LDAP: dict[str, Any] = {
    "kind": "ldap",
    "url": "ldap://127.0.0.1:1",
    "bind_dn": "cn=offboarding,dc=example,dc=test",
    "bind_password": "ldap-secret-value",
    "users_base": "ou=people,dc=example,dc=test",
    "groups_base": "ou=groups,dc=example,dc=test",
    "managers_group": "cn=managers,ou=groups,dc=example,dc=test",
}
SCIM: dict[str, Any] = {
    "kind": "scim",
    "name": "webapp",
    "base_url": "https://scim.example.test/v2",
    "token": "scim-secret-token",
}
BROKEN: dict[str, Any] = {"kind": "scim", "name": "payroll", "token": "another-secret"}
STEPS = [
    {
        "id": "laptop-and-badge",
        "text": "Collect the laptop and the door badge",
        "text_nl": "Laptop en toegangspas innemen",
        "assignee": "E1016",
    },
    {
        "id": "shared-vault",
        "text": "Change the shared <b>vault</b> | password",
        "assignee": "E2001",
        "effect": "credential",
    },
]
DAY = date(2026, 11, 30)


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))


def settings(**policy: Any) -> Settings:
    base = {
        "required_approvals": 2,
        "urgent_containment": ["sign_in", "session"],
        "manual_steps": STEPS,
        "on_leave": {"webapp": "delete"},
    }
    return Settings(
        connectors=[dict(LDAP), dict(SCIM), dict(BROKEN)],
        policy={**base, **policy},  # type: ignore[arg-type]
    )


@pytest.fixture
def document() -> WorkInstruction:
    return build(settings(), issued=DAY)


def test_the_document_comes_from_the_configuration(document: WorkInstruction) -> None:
    directory, webapp, payroll = document.systems
    assert [s.name for s in document.systems] == ["directory", "webapp", "payroll"]
    assert directory.people_directory and not webapp.people_directory
    assert directory.rules and not directory.problem
    # the plan builder's own choice: the policy's "delete" for the SCIM account
    account = next(r for r in webapp.rules if r.effect == "sign_in")
    assert account.action == "delete" and account.contained_at_once
    assert webapp.on_leave == "delete" and directory.on_leave is None
    # in the policy's effect order
    ranks = [document.effect_order.index(r.effect) for r in directory.rules]
    assert ranks == sorted(ranks)
    # a connector that cannot be built is described as such, the rest is not lost
    assert not payroll.rules and "base_url" in payroll.problem
    assert document.assignees == ("E1016", "E2001")
    assert ("managers_group", LDAP["managers_group"]) in document.managers


@pytest.mark.parametrize("language", ["nl", "en"])
@pytest.mark.parametrize("fmt", [Format.MD, Format.HTML])
def test_every_step_system_and_the_approval_count_in_both_languages(
    document: WorkInstruction, language: str, fmt: Format
) -> None:
    env = template_env()
    assert env.undefined is jinja2.StrictUndefined
    text = render_text(document, language, fmt, env)
    for step in document.manual_steps:
        assert step.id in text
        assert step.assignee in text
    assert ("Laptop en toegangspas innemen" if language == "nl" else "Collect the laptop") in text
    for system in document.systems:
        assert f"{system.name} (" in text
    assert ("2 verschillende" if language == "nl" else "2 distinct") in text
    assert document.version in text
    assert ("kon niet worden beschreven" if language == "nl" else "could not be described") in text
    assert "ldap-secret-value" not in text and "scim-secret-token" not in text
    assert "scim.example.test" not in text  # hosts are not part of the instruction


def test_the_two_languages_have_the_same_sections(document: WorkInstruction) -> None:
    headings = {
        language: [
            line.split(" ")[0]
            for line in render_text(document, language).splitlines()
            if line.startswith("#")
        ]
        for language in ("nl", "en")
    }
    assert headings["nl"] == headings["en"] and len(headings["en"]) >= 13


def test_values_never_become_markup(document: WorkInstruction) -> None:
    html = render_text(document, "en", Format.HTML)
    assert "<b>vault</b>" not in html and "&lt;b&gt;vault&lt;/b&gt;" in html
    markdown = render_text(document, "en")
    assert r"\<b\>vault\</b\> \| password" in markdown


def test_an_unknown_language_is_refused(document: WorkInstruction) -> None:
    with pytest.raises(ValueError, match="language 'de'"):
        render_text(document, "de")


def test_the_version_follows_the_policy_and_nothing_else() -> None:
    version = build(settings(), issued=DAY).version
    assert len(version) == 12
    # another day, other secrets, another host, keys in another order: the same version
    moved = Settings(
        connectors=[
            {**LDAP, "bind_password": "rotated", "url": "ldaps://ldap2.example.test"},
            {"token": "rotated", **SCIM},
            dict(BROKEN),
        ],
        policy={  # type: ignore[arg-type]
            "on_leave": {"webapp": "delete"},
            "manual_steps": STEPS,
            "urgent_containment": ["session", "sign_in"],
            "required_approvals": 2,
        },
    )
    assert build(moved, issued=date(2027, 1, 5)).version == version
    # any change of the policy: another version
    assert build(settings(required_approvals=1), issued=DAY).version != version
    assert build(settings(urgent_containment=["sign_in"]), issued=DAY).version != version
    assert build(settings(manual_steps=STEPS[:1]), issued=DAY).version != version
    assert build(settings(attest_within_hours=24), issued=DAY).version != version


def test_the_pdf_is_a_pdf(document: WorkInstruction) -> None:
    pdf = render(document, "nl", Format.PDF)
    assert pdf.startswith(b"%PDF")


CONFIG = """
[[connectors]]
kind = "ldap"
url = "ldap://127.0.0.1:1"
bind_dn = "cn=offboarding,dc=example,dc=test"
bind_password = "ldap-secret-value"
users_base = "ou=people,dc=example,dc=test"
groups_base = "ou=groups,dc=example,dc=test"

[policy]
required_approvals = 3

[[policy.manual_steps]]
id = "laptop"
text = "Collect the laptop"
text_nl = "Laptop innemen"
assignee = "E1016"
"""


def test_the_command_writes_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(config))
    target = tmp_path / "werkinstructie.html"
    result = CliRunner().invoke(
        app, ["workinstruction", "render", "--lang", "nl", "--format", "html", "--out", str(target)]
    )
    assert result.exit_code == 0, result.output
    html = target.read_text()
    assert html.startswith("<!DOCTYPE html>") and 'lang="nl"' in html
    assert "Laptop innemen" in html and "3 verschillende" in html and "directory" in html
    assert "ldap-secret-value" not in html
    assert f"Wrote {target}" in result.stdout


def test_a_bad_language_is_one_plain_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["workinstruction", "render", "--lang", "de", "--out", str(tmp_path / "x.md")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "--lang 'de' is not supported; use one of: nl, en"
    ]
    assert not (tmp_path / "x.md").exists()
