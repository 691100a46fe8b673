"""`offboarding reconcile` as a real process against a real slapd: access still active for
people HR marks as gone is listed (text and JSON), exit 1; nothing left, exit 0; a system
that cannot be read is named with its host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import ldap3
import pytest
from sqlmodel import Session

from connectors.base import Leaver
from connectors.registry import build_connector
from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.models import Case, CaseStatus
from offboarding.domain.retention import ERASED
from offboarding.wiring.db import create_schema, make_engine
from offboarding.wiring.processes import free_port

CLI = [sys.executable, "-m", "offboarding.cli"]
ADMIN_PASSWORD = "reconcile-admin-secret"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password=ADMIN_PASSWORD) as running:
        yield running, seed_demo_org(running, password="Reconcile-user-1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def run(home: Path) -> Run:
    def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
        return subprocess.run(
            [*CLI, *args],
            cwd=home.parent,
            env={**clean, "OFFBOARDING_HOME": str(home), "TEST_BIND_PASSWORD": ADMIN_PASSWORD},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run_cli


def configure(home: Path, slapd: LocalDirectory, org: DemoOrg, extra: str = "") -> None:
    (home / "config.toml").write_text(
        '[[connectors]]\nkind = "ldap"\nname = "directory"\n'
        f'url = "{slapd.url}"\nbind_dn = "{slapd.admin_dn}"\n'
        'bind_password = "env:TEST_BIND_PASSWORD"\n'
        f'users_base = "{slapd.users_base}"\ngroups_base = "{slapd.groups_base}"\n'
        f'managers_group = "{org.managers_group_dn}"\n'
        f'lockout_policy_dn = "{slapd.default_policy_dn}"\n' + extra
    )


def add_case(home: Path, employee: tuple[str, str, str], status: CaseStatus, **fields: str) -> str:
    engine = make_engine(f"sqlite:///{home / 'offboarding.db'}")
    create_schema(engine)
    employee_id, email, name = employee
    case = Case(
        event_id=f"evt-{employee_id}-{status.value}",
        employee_id=employee_id,
        employee_email=fields.get("email", email),
        display_name=fields.get("display_name", name),
        requested_by="E0007",
        last_working_day=date(2026, 11, 30),
        occurred_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        status=status,
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    engine.dispose()
    return case.id


def offboard_in_slapd(slapd: LocalDirectory, leaver: Leaver) -> list[str]:
    """Revoke everything the leaver has, as the service would; returns the groups they had."""
    connector = build_connector(slapd.connector_config())
    groups = [g.target for g in connector.inventory(leaver) if g.kind == "group"]
    for grant in connector.inventory(leaver):
        connector.revoke(grant)
    assert connector.inventory(leaver) == []
    return groups


def named_group(slapd: LocalDirectory, groups: list[str]) -> str:
    """One of `groups` that lists its members by DN (groupOfNames)."""
    conn = slapd.admin_connection()
    try:
        for dn in groups:
            conn.search(dn, "(objectClass=groupOfNames)", ldap3.BASE)
            if conn.entries:
                return dn
    finally:
        conn.unbind()
    raise AssertionError(f"no groupOfNames among {groups}")


def change_member(slapd: LocalDirectory, group_dn: str, member_dn: str, operation: str) -> None:
    conn = slapd.admin_connection()
    try:
        assert conn.modify(group_dn, {"member": [(operation, [member_dn])]}), conn.result
    finally:
        conn.unbind()


def test_reconcile_lists_access_of_people_who_left(run, home, directory) -> None:  # type: ignore[no-untyped-def]
    slapd, org = directory
    configure(home, slapd, org)
    leaver = Leaver(employee_id=org.leaver_id, email=org.leaver_email, display_name=org.leaver_name)
    group = named_group(slapd, offboard_in_slapd(slapd, leaver))
    case_id = add_case(
        home, (org.leaver_id, org.leaver_email, org.leaver_name), CaseStatus.COMPLETED
    )
    # someone who is not gone (rejected) and someone whose data retention erased: not read
    stays = next(e for e in org.employee_ids if e not in (org.leaver_id, *org.manager_ids))
    add_case(home, (stays, "x@example.test", "Stays Here"), CaseStatus.REJECTED)
    other = next(e for e in org.employee_ids if e not in (org.leaver_id, stays, *org.manager_ids))
    add_case(
        home,
        (other, "y@example.test", "Gone Long"),
        CaseStatus.COMPLETED,
        display_name=ERASED,
        email=ERASED,
    )

    clean = run("reconcile")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "1 leaver(s) checked in 1 system(s) (directory): nothing still active." in clean.stdout

    change_member(slapd, group, org.leaver_dn, ldap3.MODIFY_ADD)  # a colleague gives it back
    found = run("reconcile")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "1 access(es) still active." in found.stdout
    assert f"{org.leaver_name} ({org.leaver_id}), case {case_id} (completed)" in found.stdout
    (line,) = [row for row in found.stdout.splitlines() if row.startswith("  directory")]
    assert "  group  directory|group|" in line and line.endswith(group)
    assert "Stays Here" not in found.stdout and stays not in found.stdout
    assert ADMIN_PASSWORD not in found.stdout + found.stderr

    as_json = run("reconcile", "--json")
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["leavers_checked"] == 1 and report["systems"] == ["directory"]
    assert report["unreadable"] == []
    (row,) = report["found"]
    assert (row["employee_id"], row["system"], row["kind"], row["target"]) == (
        org.leaver_id,
        "directory",
        "group",
        group,
    )
    assert row["key"].startswith("directory|group|")

    change_member(slapd, group, org.leaver_dn, ldap3.MODIFY_DELETE)
    assert run("reconcile").returncode == 0


def test_reconcile_names_a_system_it_cannot_read(run, home, directory) -> None:  # type: ignore[no-untyped-def]
    slapd, org = directory
    port = free_port()
    configure(
        home,
        slapd,
        org,
        extra=(
            '\n[[connectors]]\nkind = "ldap"\nname = "old-ldap"\n'
            f'url = "ldap://127.0.0.1:{port}"\nbind_dn = "cn=x,dc=example,dc=test"\n'
            'bind_password = "env:TEST_BIND_PASSWORD"\n'
            'users_base = "ou=people,dc=example,dc=test"\n'
            'groups_base = "ou=groups,dc=example,dc=test"\n'
        ),
    )
    add_case(home, (org.leaver_id, org.leaver_email, org.leaver_name), CaseStatus.NEEDS_ATTENTION)
    done = run("reconcile")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    (problem, hint) = done.stderr.strip().splitlines()
    assert problem.startswith(f"old-ldap (ldap://127.0.0.1:{port}) could not be read: ")
    assert "offboarding check" in hint
    # the system that could be read is still reported: the leaver was never offboarded there
    assert "still active" in done.stdout and "  directory  group  " in done.stdout
    assert ADMIN_PASSWORD not in done.stdout + done.stderr
