"""The work instruction file: what it says is the policy the service executes, every mistake
in it is one plain `FILE:LINE: field: message` line (from the loader, from `offboarding check`),
the rendered document lists every step of it, and each plan records its version and hash."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack, start_stack
from support import send_leaver
from typer.testing import CliRunner

from offboarding.cli import app
from offboarding.cli import workinstruction as _registered  # noqa: F401 - adds the command
from offboarding.domain.audit import events_for_case
from offboarding.domain.policy import Policy
from offboarding.wiring.settings import Settings
from offboarding.workinstruction.document import build
from offboarding.workinstruction.file import (
    POLICY_FIELDS,
    InvalidWorkInstruction,
    load,
    parse,
    to_yaml,
)
from offboarding.workinstruction.render import Format, render_text

EXAMPLE = Path(__file__).parents[2] / "workinstruction.example.yaml"
LDAP: dict[str, Any] = {
    "kind": "ldap",
    "url": "ldap://127.0.0.1:1",
    "bind_dn": "cn=offboarding,dc=example,dc=test",
    "bind_password": "ldap-secret-value",
    "users_base": "ou=people,dc=example,dc=test",
    "groups_base": "ou=groups,dc=example,dc=test",
}
SCIM: dict[str, Any] = {
    "kind": "scim",
    "name": "webapp",
    "base_url": "https://scim.example.test/v2",
    "token": "scim-secret-token",
}
VALID = """\
version: "2026.1"
title: Offboarding work instruction
owner: HR director
approvals:
  required: 2
  approve_within_hours: 36
  remind_after_hours: 8
  escalate_after_hours: 20
  escalation_managers: [E1001]
instant_dismissal:
  containment: [sign_in, session]
effect_order: [sign_in, membership]
systems:
  - connector: webapp
    on_leave: delete
  - connector: directory
manual_steps:
  - id: laptop
    text: Collect the laptop
    text_nl: Laptop innemen
    assignee: E1016
  - id: vault
    text: Change the shared vault password
    assignee: E2001
    effect: credential
manual_assignee: E1016
attest_within_hours: 24
recheck_after_days: [2, 14]
deadlines:
  access_removed: end_of_last_working_day
  run_at: "17:30"
retention:
  case_data_days: 90
"""
# The same choices as `[policy]` in config.toml.
EQUIVALENT = {
    "required_approvals": 2,
    "remind_after_hours": 8,
    "escalate_after_hours": 20,
    "escalation_managers": ["E1001"],
    "urgent_containment": ["sign_in", "session"],
    "effect_order": ["sign_in", "membership"],
    "on_leave": {"webapp": "delete"},
    "manual_steps": [
        {
            "id": "laptop",
            "text": "Collect the laptop",
            "text_nl": "Laptop innemen",
            "assignee": "E1016",
        },
        {
            "id": "vault",
            "text": "Change the shared vault password",
            "assignee": "E2001",
            "effect": "credential",
        },
    ],
    "manual_assignee": "E1016",
    "attest_within_hours": 24,
    "recheck_after_days": [14, 2],
}
NAMES = ["directory", "webapp"]


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))


def problems(text: str, connectors: list[str] | None = NAMES) -> list[str]:
    with pytest.raises(InvalidWorkInstruction) as caught:
        parse(text.encode(), Path("wi.yaml"), connectors=connectors)
    assert str(caught.value).splitlines() == list(caught.value.problems)
    return list(caught.value.problems)


def test_a_valid_file_is_the_policy_of_the_same_choices_in_config_toml() -> None:
    loaded = parse(VALID.encode(), Path("wi.yaml"), connectors=NAMES)
    assert loaded.policy == Policy.model_validate(EQUIVALENT)
    assert loaded.version == "2026.1"
    assert loaded.sha256 == hashlib.sha256(VALID.encode()).hexdigest()
    assert loaded.settings == {
        "approval_ttl_hours": 36,
        "retention_days": 90,
        "end_of_day": "17:30",
    }
    assert loaded.details() == {"instruction_label": "2026.1", "instruction_sha256": loaded.sha256}


def test_the_example_file_is_valid_and_says_what_the_default_policy_says() -> None:
    loaded = load(EXAMPLE, connectors=["directory"])
    assert loaded.version == "2026.1"
    assert loaded.policy.required_approvals == 1
    assert loaded.policy.manual_steps[0].id == "laptop-and-badge"


def test_every_policy_field_has_its_place_in_the_file() -> None:
    """A new Policy field that the file cannot state would make the file a partial truth."""
    assert set(POLICY_FIELDS) == set(Policy.model_fields)


def test_a_policy_written_as_a_file_reads_back_the_same() -> None:
    policy = Policy.model_validate(EQUIVALENT)
    text = to_yaml(
        policy,
        version="x-1",
        title="T",
        owner="O",
        approve_within_hours=72,
        retention_days=365,
        connectors=NAMES,
    )
    assert parse(text.encode(), Path("wi.yaml"), connectors=NAMES).policy == policy


def test_settings_take_the_policy_and_deadlines_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "workinstruction.yaml"
    path.write_text(VALID)
    settings = Settings(connectors=[dict(LDAP), dict(SCIM)], work_instruction=path)
    assert settings.policy == Policy.model_validate(EQUIVALENT)
    assert (settings.approval_ttl_hours, settings.retention_days, settings.end_of_day) == (
        36,
        90,
        "17:30",
    )
    assert settings.connector_config("webapp")["on_leave"] == "delete"
    loaded = settings.work_instruction_file
    assert loaded is not None and loaded.version == "2026.1"
    # relative: next to the config file
    (tmp_path / "absent.toml").write_text('work_instruction = "workinstruction.yaml"\n')
    relative = Settings(connectors=[dict(LDAP), dict(SCIM)])
    assert relative.work_instruction == path and relative.policy == settings.policy


def test_without_a_file_nothing_changes() -> None:
    settings = Settings(connectors=[dict(LDAP)], policy={"required_approvals": 3})  # type: ignore[arg-type]
    assert settings.work_instruction is None and settings.work_instruction_file is None
    assert settings.policy.required_approvals == 3 and settings.retention_days == 365


def test_policy_in_two_places_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "workinstruction.yaml"
    path.write_text(VALID)
    with pytest.raises(ValueError, match=r"\[policy\] and work_instruction"):
        Settings(connectors=[dict(LDAP), dict(SCIM)], work_instruction=path, policy={})  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="retention_days is 30 here but 90 in the work instruction"
    ):
        Settings(connectors=[dict(LDAP), dict(SCIM)], work_instruction=path, retention_days=30)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("  approve_within_hours: 36\n", "  approve_within_hours: 36\n  approvers: [E1]\n"),
            "wi.yaml:7: approvals.approvers: unknown key; check its spelling against "
            "workinstruction.example.yaml",
        ),
        (
            ("  required: 2\n", "  required: two\n"),
            "wi.yaml:5: approvals.required: must be a valid integer, unable to parse string "
            "as an integer",
        ),
        (
            ("containment: [sign_in, session]", "containment: [sign_in, logout]"),
            "wi.yaml:11: instant_dismissal.containment[1]: must be 'sign_in', 'session', "
            "'credential', 'membership' or 'data'",
        ),
        (
            ("    on_leave: delete\n", "    on_leave: remove\n"),
            "wi.yaml:15: systems[0].on_leave: must be 'disable' or 'delete'",
        ),
        (
            ("  - connector: directory\n", "  - connector: directory\n  - connector: payroll\n"),
            "wi.yaml:17: systems[2].connector: 'payroll' is not a configured connector; "
            "configured: directory, webapp",
        ),
        (
            ("  - id: vault\n", "  - id: laptop\n"),
            "wi.yaml:22: manual_steps[1].id: 'laptop' is used twice; ids differ",
        ),
        (
            ("retention:\n  case_data_days: 90\n", ""),
            "wi.yaml:1: retention: missing; this key is required",
        ),
        (
            ("  escalate_after_hours: 20\n", "  escalate_after_hours: 4\n"),
            "wi.yaml:8: approvals.escalate_after_hours: escalate_after_hours must not be "
            "earlier than remind_after_hours (4.0 < 8.0)",
        ),
        (
            ("title: Offboarding work instruction\n", "title: Offboarding\ntitle: Again\n"),
            "wi.yaml:3: title: given twice; give each key once",
        ),
        (
            ("systems:\n", "systems: [\n"),
            "wi.yaml:14: not valid YAML: while parsing a flow node expected the node content, "
            "but found '-'",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bad-effect",
        "bad-on-leave",
        "unknown-connector",
        "duplicate-step",
        "missing",
        "cross-field",
        "duplicate-key",
        "yaml-syntax",
    ],
)
def test_each_mistake_is_one_line_with_its_line_and_field(
    edit: tuple[str, str], expected: str
) -> None:
    old, new = edit
    assert VALID.count(old) == 1
    assert problems(VALID.replace(old, new)) == [expected]


def test_a_configured_connector_missing_from_the_file_is_named() -> None:
    assert problems(VALID, connectors=[*NAMES, "github"]) == [
        "wi.yaml:13: systems: the configured connector 'github' is not in the work "
        "instruction; add it (each system the service revokes in is described here)"
    ]


def test_all_mistakes_at_once_in_file_order() -> None:
    text = VALID.replace("  required: 2\n", "  required: 0\n").replace(
        "effect: credential", "effect: keys"
    )
    assert [line.split(": ")[0] for line in problems(text)] == ["wi.yaml:5", "wi.yaml:25"]


def test_an_empty_or_unreadable_file(tmp_path: Path) -> None:
    assert problems("") == ["wi.yaml:1: the file is empty; see workinstruction.example.yaml"]
    assert problems("- a list\n") == [
        "wi.yaml:1: file: the file must be a mapping of keys (version:, title:, ...)"
    ]
    with pytest.raises(InvalidWorkInstruction, match=r"absent.yaml:1: cannot be read"):
        load(tmp_path / "absent.yaml")


def test_a_python_tag_is_refused_with_its_line() -> None:
    text = VALID.replace("owner: HR director", "owner: !!python/name:os.system ''")
    assert problems(text)[0].startswith("wi.yaml:3: not valid here: could not determine")


CONFIG = f"""
work_instruction = "workinstruction.yaml"

[[connectors]]
kind = "ldap"
url = "ldap://127.0.0.1:1"
bind_dn = "cn=offboarding,dc=example,dc=test"
bind_password = "ldap-secret-value"
users_base = "ou=people,dc=example,dc=test"
groups_base = "ou=groups,dc=example,dc=test"

[[connectors]]
kind = "scim"
name = "webapp"
base_url = "https://scim.example.test/v2"
token = "{SCIM["token"]}"
"""


def test_offboarding_check_names_the_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    (tmp_path / "workinstruction.yaml").write_text(
        VALID.replace("on_leave: delete", "on_leave: wipe")
    )
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(config))
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 2, result.output  # a configuration problem, as for config.toml
    lines = result.stderr.strip().splitlines()
    assert lines[1:] == [
        f"  {tmp_path / 'workinstruction.yaml'}:15: systems[0].on_leave: "
        "must be 'disable' or 'delete'"
    ]
    # both places: refused, naming config.toml
    config.write_text(CONFIG + "\n[policy]\nrequired_approvals = 2\n")
    (tmp_path / "workinstruction.yaml").write_text(VALID)
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 2
    assert "config.toml: [policy] and work_instruction (workinstruction.yaml) are both set" in (
        result.stderr
    )


@pytest.mark.parametrize("language", ["en", "nl"])
@pytest.mark.parametrize("fmt", [Format.MD, Format.HTML])
def test_the_document_lists_every_step_of_the_file(
    tmp_path: Path, language: str, fmt: Format
) -> None:
    path = tmp_path / "workinstruction.yaml"
    path.write_text(VALID)
    settings = Settings(connectors=[dict(LDAP), dict(SCIM)], work_instruction=path)
    document = build(settings, issued=date(2026, 11, 30))
    text = render_text(document, language, fmt)
    loaded = settings.work_instruction_file
    assert loaded is not None
    assert "2026.1" in text and loaded.sha256 in text and "workinstruction.yaml" in text
    assert "Offboarding work instruction" in text and "HR director" in text
    # the systems in the file's order
    assert text.index("webapp (") < text.index("directory (")
    for step in loaded.spec.manual_steps:
        assert step.id in text and step.assignee in text
    assert ("Laptop innemen" if language == "nl" else "Collect the laptop") in text
    assert "17:30" in text and "36" in text and "90" in text  # deadlines, link, retention
    assert "E1001" in text  # escalation
    assert ("laatste werkdag" if language == "nl" else "last working day") in text
    assert ("14 dagen" if language == "nl" else "14 days") in text  # the watch after the case
    assert "ldap-secret-value" not in text and "scim-secret-token" not in text


def test_the_render_command_uses_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    (tmp_path / "workinstruction.yaml").write_text(VALID)
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(config))
    target = tmp_path / "wi.html"
    result = CliRunner().invoke(
        app, ["workinstruction", "render", "--lang", "en", "--format", "html", "--out", str(target)]
    )
    assert result.exit_code == 0, result.output
    assert "version 2026.1" in result.stdout
    assert "2026.1" in target.read_text()


def test_the_flow_records_what_this_process_loaded(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from flows.offboard_leaver import instruction_file_details

    path = tmp_path / "workinstruction.yaml"
    path.write_text(VALID)
    settings = Settings(connectors=[dict(LDAP), dict(SCIM)], work_instruction=path)
    details = instruction_file_details(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    assert details == {
        "instruction_label": "2026.1",
        "instruction_sha256": hashlib.sha256(VALID.encode()).hexdigest(),
    }
    without = Settings(connectors=[dict(LDAP)])
    assert instruction_file_details(SimpleNamespace(settings=without)) == {}  # type: ignore[arg-type]


# -- a real run records the file's version and hash with its plan -----------------------------


@pytest.fixture(scope="module")
def instruction_stack(tmp_path_factory, smtp_server) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("instruction")
    path = folder / "workinstruction.yaml"
    path.write_text(EXAMPLE.read_text().replace('version: "2026.1"', 'version: "test-7"'))
    yield from start_stack(folder, None, smtp_server, work_instruction=path)


@pytest.mark.e2e
def test_a_real_plan_records_the_files_version_and_hash(instruction_stack: Stack) -> None:
    stack = instruction_stack
    path = stack.settings.work_instruction
    assert path is not None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    response = send_leaver(stack, stack.org.leaver_id, stack.org.leaver_uid, "Leaver")
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    deadline = time.monotonic() + 180
    created: list[dict[str, Any]] = []
    while not created and time.monotonic() < deadline:
        events = events_for_case(stack.engine, case_id)
        created = [json.loads(e.details) for e in events if e.action == "plan.created"]
        time.sleep(0.2)
    assert created, "no plan was created"
    assert created[0]["instruction_label"] == "test-7"
    assert created[0]["instruction_sha256"] == digest
    assert created[0]["instruction"]  # the configuration's version, as before
