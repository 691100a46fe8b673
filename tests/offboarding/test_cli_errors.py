"""Every command, when something is wrong, as a new user meets it: real processes, real
unreachable ports, real databases and a real slapd. The answer is a few plain lines that
name the file, setting, host or case and say what to do, a non-zero exit, no traceback and
no secret. Also the dry run (`plan`) and the list of connector kinds (`connectors`)."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import ldap3
import pytest
from sqlmodel import Session, select
from support import seed_prefect_database

from connectors.base import Leaver
from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.models import Case, CaseStatus, RevocationPlanRecord
from offboarding.domain.plan import build_plan
from offboarding.wiring.db import create_schema, make_engine
from offboarding.wiring.processes import free_port

CLI = [sys.executable, "-m", "offboarding.cli"]
NOISE = ("Traceback", "errors.pydantic.dev", "input_value", "type=", "For further information")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def run(home: Path) -> Run:
    """Run `offboarding ARGS` with OFFBOARDING_HOME=home and no other OFFBOARDING_* setting."""

    def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
        return subprocess.run(
            [*CLI, *args],
            cwd=home.parent,
            env={**clean, "OFFBOARDING_HOME": str(home), **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run_cli


def plain_error(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The error text, after checking it is one: the exit code, and no traceback or noise."""
    text = done.stdout + done.stderr
    assert done.returncode == code, text
    assert not [noise for noise in NOISE if noise in text], text
    assert done.stderr.strip(), text
    return done.stderr


def unreachable_directory(port: int) -> str:
    return (
        '[[connectors]]\nkind = "ldap"\n'
        f'url = "ldap://127.0.0.1:{port}"\nbind_dn = "cn=offboarding,dc=example,dc=test"\n'
        'bind_password = "env:TEST_BIND_PASSWORD"\nusers_base = "ou=people,dc=example,dc=test"\n'
        'groups_base = "ou=groups,dc=example,dc=test"\n'
    )


def empty_database(home: Path) -> str:
    url = f"sqlite:///{home / 'offboarding.db'}"
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    return url


def add_case(home: Path, status: CaseStatus) -> str:
    engine = make_engine(f"sqlite:///{home / 'offboarding.db'}")
    case = Case(
        event_id=f"evt-{secrets.token_hex(4)}",
        employee_id="E1042",
        employee_email="jdevries@example.test",
        display_name="Jan de Vries",
        requested_by="E0007",
        last_working_day=date(2026, 11, 30),
        occurred_at=datetime(2026, 11, 24, 9, 30, tzinfo=UTC),
        status=status,
    )
    leaver = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan")
    plan = build_plan(case_id=case.id, leaver=leaver, grants=[])
    with Session(engine) as session:
        session.add(case)
        session.add(
            RevocationPlanRecord(
                case_id=case.id, version=1, plan_hash=plan.plan_hash, canonical=plan.canonical()
            )
        )
        session.commit()
        case_id = case.id
    engine.dispose()
    return case_id


# -- settings -------------------------------------------------------------------------------


def test_every_settings_problem_at_once_named_by_file_or_variable(run, home) -> None:  # type: ignore[no-untyped-def]
    (home / "config.toml").write_text(
        'env = "production"\nport = "eighty"\ntimezone = "Mars/Olympus"\nprot = 1\n'
        '[smtp]\nhost = "smtp.example.test"\nport = "x"\npassword = "smtp-password-in-file"\n'
        '[[connectors]]\nkind = "ldap"\nurl = "http://ldap.example.test"\n'
        'bind_password = "bind-password-in-file"\nusers_base = "ou=people"\n'
        'groups_base = "ou=groups"\n'
        '[[connectors]]\nkind = "scim"\nname = "apex"\nbase_url = "https://apex.example.test"\n'
        'token_env = "TEST_UNSET_TOKEN"\n'
    )
    done = run("cases", env={"OFFBOARDING_APPROVAL_TTL_HOURS": "soon"})
    text = plain_error(done, 2)
    lines = text.strip().splitlines()
    assert str(home / "config.toml") in lines[0]
    expected = [
        "config.toml: port: ",
        "config.toml: timezone: unknown timezone 'Mars/Olympus'",
        "config.toml: prot: unknown setting",
        "config.toml: smtp.port: ",
        "environment OFFBOARDING_APPROVAL_TTL_HOURS: ",
        "config.toml: connectors[0].url: ",
        "config.toml: connectors[0].bind_dn: missing",
        "config.toml: connectors[1]: connector 'apex': token_env refers to the environment "
        "variable TEST_UNSET_TOKEN, which is not set",
        "OFFBOARDING_HRIS_SECRET",  # production refuses the default secrets: also said now
    ]
    assert not [line for line in expected if line not in text], text
    assert len(lines) == 1 + 9, text  # each once
    assert "smtp-password-in-file" not in text and "bind-password-in-file" not in text


def test_a_malformed_config_file_is_named_with_its_line(run, home) -> None:  # type: ignore[no-untyped-def]
    (home / "config.toml").write_text('port = 8080\n[smtp\nhost = "x"\n')
    text = plain_error(run("check"), 2)
    assert f"{home / 'config.toml'}: not valid TOML" in text and "line 2" in text
    assert len(text.strip().splitlines()) == 2


def test_a_settings_variable_that_is_not_json_is_named(run) -> None:  # type: ignore[no-untyped-def]
    text = plain_error(run("audit", "verify", env={"OFFBOARDING_CONNECTORS": "[{"}), 2)
    assert "environment OFFBOARDING_CONNECTORS: not valid JSON" in text


# -- commands that need the connectors ------------------------------------------------------


def test_up_without_connectors_says_where_to_add_them(run, home) -> None:  # type: ignore[no-untyped-def]
    text = plain_error(run("up"), 2)
    assert "No connectors configured" in text and str(home / "config.toml") in text


def test_up_names_an_unreachable_database_without_its_password(run, home) -> None:  # type: ignore[no-untyped-def]
    (home / "config.toml").write_text(unreachable_directory(free_port()))
    port = free_port()
    done = run(
        "up",
        "--port",
        str(free_port()),
        "--prefect-port",
        str(free_port()),
        env={
            "TEST_BIND_PASSWORD": "unused-bind-password",
            "OFFBOARDING_DATABASE_URL": f"postgresql://offboarding:db-password@127.0.0.1:{port}/x",
        },
    )
    text = plain_error(done)
    assert text.startswith("Could not start: ") and f"127.0.0.1:{port}" in text, text
    assert "db-password" not in done.stdout + done.stderr


def test_demo_says_which_port_is_taken(run) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = plain_error(run("demo", "--port", str(port), "--prefect-port", str(free_port())))
    assert f"127.0.0.1:{port}" in text and "--port" in text


def test_check_says_which_directory_does_not_answer(run, home) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    (home / "config.toml").write_text(unreachable_directory(port))
    done = run("check", env={"TEST_BIND_PASSWORD": "check-bind-password"})
    plain_error(done)
    assert "directory (ldap): NEEDS ATTENTION" in done.stdout
    assert f"ldap://127.0.0.1:{port}" in done.stdout and "Connection refused" in done.stdout
    assert "managers who can approve: unknown" in done.stdout
    assert "check-bind-password" not in done.stdout + done.stderr


def test_check_lists_every_connector_problem(run, home) -> None:  # type: ignore[no-untyped-def]
    (home / "config.toml").write_text(
        unreachable_directory(1).replace('"ldap://127.0.0.1:1"', '"http://not-ldap"')
        + '[[connectors]]\nkind = "svn"\nname = "code"\n'
        + '[[connectors]]\nkind = "github"\nname = "git"\n'
    )
    text = plain_error(run("check", env={"TEST_BIND_PASSWORD": "x"}), 2)
    assert "config.toml: connectors[0].url: url 'http://not-ldap' must start with ldap://" in text
    assert "config.toml: connectors[1].kind: connector 'code': unknown kind 'svn'" in text
    assert "config.toml: connectors[2].organization: missing; this setting is required" in text


# -- commands that read the database --------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["cases"], ["retention", "--dry-run"], ["audit", "verify"], ["audit", "show", "x"]]
)
def test_an_unreachable_database_is_named_without_its_password(run, command) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"postgresql://offboarding:db-password@127.0.0.1:{port}/offboarding"
    done = run(*command, env={"OFFBOARDING_DATABASE_URL": url})
    text = plain_error(done)
    assert f"Could not reach the database at 127.0.0.1:{port}" in text
    assert "OFFBOARDING_DATABASE_URL" in text and "db-password" not in text + done.stdout


def test_a_data_dir_without_a_database_is_not_mistaken_for_an_empty_one(run, home) -> None:  # type: ignore[no-untyped-def]
    text = plain_error(run("audit", "verify"))
    assert f"No database at {home / 'offboarding.db'}" in text and "OFFBOARDING_HOME" in text
    assert not (home / "offboarding.db").exists()


def test_cases_prints_a_header_and_says_when_there_are_none(run, home) -> None:  # type: ignore[no-untyped-def]
    empty_database(home)
    done = run("cases")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:3] == ["CASE", "STATUS", "EMPLOYEE"]
    assert done.stdout.strip().endswith("no cases")
    unknown = plain_error(run("cases", "--status", "finished"), 2)
    assert "awaiting_approval" in unknown


def test_audit_show_of_an_unknown_case_says_where_to_find_cases(run, home) -> None:  # type: ignore[no-untyped-def]
    empty_database(home)
    text = plain_error(run("audit", "show", "no-such-case"))
    assert "no-such-case" in text and "offboarding cases" in text


def test_approvals_resend_in_the_demo_data_dir(run, home) -> None:  # type: ignore[no-untyped-def]
    """The README's `OFFBOARDING_HOME=.offboarding/demo`: a database, no config.toml."""
    empty_database(home)
    unknown = plain_error(run("approvals", "resend", "no-such-case"))
    assert "No case no-such-case" in unknown and "offboarding cases" in unknown

    done = add_case(home, CaseStatus.COMPLETED)
    finished = plain_error(run("approvals", "resend", done))
    assert f"case {done} is completed, not awaiting approval" in finished

    waiting = add_case(home, CaseStatus.AWAITING_APPROVAL)
    text = plain_error(run("approvals", "resend", waiting), 2)
    assert "No connectors configured" in text and "people directory" in text
    assert str(home / "config.toml") in text


def test_approvals_resend_says_which_directory_does_not_answer(run, home) -> None:  # type: ignore[no-untyped-def]
    empty_database(home)
    waiting = add_case(home, CaseStatus.AWAITING_APPROVAL)
    port = free_port()
    (home / "config.toml").write_text(unreachable_directory(port))
    done = run("approvals", "resend", waiting, env={"TEST_BIND_PASSWORD": "resend-password"})
    text = plain_error(done)
    assert f"ldap://127.0.0.1:{port}" in text and "offboarding check" in text
    assert "resend-password" not in text + done.stdout


# -- acting as the HR system ----------------------------------------------------------------


def test_hris_send_names_the_url_it_could_not_reach_and_the_option(run) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    event = ["--employee", "E1042", "--requested-by", "E0007", "--email", "j@example.test"]
    done = run("hris", "send", *event, "--display-name", "J", env={"OFFBOARDING_PORT": str(port)})
    text = plain_error(done)
    assert f"http://127.0.0.1:{port}" in text and "--url" in text
    bad_day = ["--display-name", "J", "--last-working-day", "30-11-2026"]
    assert "YYYY-MM-DD" in plain_error(run("hris", "send", *event, *bad_day), 2)


# -- the list of connector kinds ------------------------------------------------------------


def test_connectors_lists_the_kinds_and_their_settings(run) -> None:  # type: ignore[no-untyped-def]
    done = run("connectors")
    assert done.returncode == 0, done.stderr
    assert "\nldap  (built-in; can be the people directory)" in done.stdout
    assert "\nscim  (built-in)" in done.stdout
    assert "  bind_password  (secret, required)" in done.stdout
    assert "  base_url  (string, required)" in done.stdout
    assert "  start_tls  (true/false, default false)" in done.stdout


# -- the dry run, against a real directory --------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    with LocalDirectory.start(tmp_path / "slapd", admin_password="plan-admin-secret") as running:
        yield running, seed_demo_org(running, password="Plan-user-1")


def leaver_state(directory: LocalDirectory, org: DemoOrg) -> tuple[list[str], list[str], str]:
    """The leaver's groups, lock and password as slapd has them (read without the service)."""
    conn = directory.admin_connection()
    try:
        conn.search(
            directory.groups_base,
            f"(|(member={org.leaver_dn})(memberUid={org.leaver_uid}))",
            attributes=["cn"],
        )
        groups = sorted(entry.entry_dn for entry in conn.entries)
        conn.search(
            org.leaver_dn,
            "(objectClass=*)",
            ldap3.BASE,
            attributes=["pwdAccountLockedTime", "userPassword", "pwdReset"],
        )
        (entry,) = conn.entries
        attributes = entry.entry_attributes_as_dict
        lock = sorted(str(v) for v in attributes.get("pwdAccountLockedTime", []))
        password = repr(attributes.get("userPassword"))
    finally:
        conn.unbind()
    return groups, lock, password


def test_plan_prints_the_plan_and_changes_nothing(run, home, directory) -> None:  # type: ignore[no-untyped-def]
    slapd, org = directory
    database_url = empty_database(home)
    (home / "config.toml").write_text(
        '[policy]\nurgent_containment = ["sign_in"]\n\n[[connectors]]\nkind = "ldap"\n'
        f'url = "{slapd.url}"\nbind_dn = "{slapd.admin_dn}"\n'
        'bind_password = "env:TEST_BIND_PASSWORD"\n'
        f'users_base = "{slapd.users_base}"\ngroups_base = "{slapd.groups_base}"\n'
        f'managers_group = "{org.managers_group_dn}"\n'
        f'lockout_policy_dn = "{slapd.default_policy_dn}"\n'
    )
    env = {"TEST_BIND_PASSWORD": "plan-admin-secret"}
    before = leaver_state(slapd, org)
    assert before[0] and not before[1]  # in groups, not locked

    shown = run("plan", org.leaver_id, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"Dry run for {org.leaver_name} ({org.leaver_id}" in shown.stdout
    for group in before[0]:
        assert group in shown.stdout
    assert "containment" not in shown.stdout  # not urgent: everything waits for approval

    urgent = run("plan", org.leaver_id, "--urgent", "--json", env=env)
    assert urgent.returncode == 0, urgent.stderr
    planned = json.loads(urgent.stdout)
    assert planned["dry_run"] is True and planned["complete"] is True
    assert planned["connectors"][0]["steps"] == len(planned["steps"])
    assert len(planned["plan_sha256"]) == 64
    phases = {step["effect"]: step["phase"] for step in planned["steps"]}
    assert phases["sign_in"] == "containment" and phases["membership"] == "revocation"
    assert f"directory (ldap): {len(planned['steps'])} steps" in shown.stdout
    targets = {step["target"] for step in planned["steps"]}
    assert set(before[0]) <= targets and org.leaver_dn in targets

    assert leaver_state(slapd, org) == before  # the directory is unchanged
    engine = make_engine(database_url)
    with Session(engine) as session:
        assert session.exec(select(Case)).all() == []
    engine.dispose()
    assert not list(home.glob("outbox/*.eml"))
    assert "plan-admin-secret" not in shown.stdout + urgent.stdout


def test_plan_reports_an_unknown_person_and_a_failing_connector(run, home, directory) -> None:  # type: ignore[no-untyped-def]
    slapd, org = directory
    port = free_port()
    (home / "config.toml").write_text(
        '[[connectors]]\nkind = "ldap"\n'
        f'url = "{slapd.url}"\nbind_dn = "{slapd.admin_dn}"\n'
        'bind_password = "env:TEST_BIND_PASSWORD"\n'
        f'users_base = "{slapd.users_base}"\ngroups_base = "{slapd.groups_base}"\n\n'
        + unreachable_directory(port).replace('kind = "ldap"', 'kind = "ldap"\nname = "old-ldap"')
    )
    env = {"TEST_BIND_PASSWORD": "plan-admin-secret"}
    unknown = plain_error(run("plan", "E9999", env=env))
    assert unknown.strip() == "No employee E9999 in the people directory (directory)."

    done = run("plan", org.leaver_id, env=env)
    text = plain_error(done)
    assert re.search(r"directory \(ldap\): \d+ steps", done.stdout)  # the others are still read
    assert f"old-ldap (ldap): COULD NOT BE READ: old-ldap: connect ldap://127.0.0.1:{port}" in (
        done.stdout
    )
    assert "Could not read old-ldap" in text


@pytest.mark.e2e
def test_ctrl_c_stops_up_without_warnings(home) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group."""
    (home / "config.toml").write_text(unreachable_directory(free_port()))
    seed_prefect_database(home, home.parent)  # Prefect's migrations are not under test here
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
    ports = ["--port", str(free_port()), "--prefect-port", str(free_port())]
    process = subprocess.Popen(
        [*CLI, "up", *ports],
        cwd=home.parent,
        env={**clean, "OFFBOARDING_HOME": str(home), "TEST_BIND_PASSWORD": "x"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Press Ctrl-C" in line:
            break
    os.killpg(process.pid, signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    text = "".join(lines) + rest
    assert process.returncode == 0, text
    assert "Stopping ..." in text
    assert "never awaited" not in text and "RuntimeWarning" not in text and "Traceback" not in text
