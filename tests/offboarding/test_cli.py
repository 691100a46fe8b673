"""The two commands a newcomer runs, as real processes: `offboarding demo` and `offboarding up`."""

from __future__ import annotations

import email
import email.policy
import os
import re
import secrets
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import ldap3
import pytest
from support import (
    csrf_of,
    decide,
    groups_with,
    is_locked,
    seed_prefect_database,
    text_of,
    wait_for_state,
)

from demo.directory import LocalDirectory
from offboarding.wiring.processes import free_port
from offboarding.wiring.settings import Settings

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "offboarding.cli"]


class Console:
    """A running command's output, collected line by line."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not printed; output:\n{self.text[-3000:]}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def run_cli(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, env: dict[str, str] | None = None) -> Console:
        process = subprocess.Popen(
            [*CLI, *args],
            cwd=tmp_path,
            env={**os.environ, "OFFBOARDING_HOME": str(tmp_path / "home"), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        return Console(process)

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop_with_ctrl_c(console: Console) -> None:
    helpers = children_of(console.process.pid)
    assert helpers, "the command should have started the Prefect server and the runner"
    console.process.send_signal(signal.SIGINT)
    assert console.process.wait(timeout=60) == 0
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in helpers if alive(pid)], "Ctrl-C must stop everything it started"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            (values[name],) = shlex.split(value)
    return values


def test_demo_prints_links_a_manager_approves_and_the_run_completes(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    web, prefect = free_port(), free_port()
    real_installation = {  # the demo must not touch a real configuration's databases
        "OFFBOARDING_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/production",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/prefect",
    }
    console = run_cli(
        "demo",
        "--port",
        str(web),
        env={"OFFBOARDING_PREFECT_PORT": str(prefect), **real_installation},
    )
    console.wait_for(rf"Web app \(HRIS intake, approvals\): http://127.0.0.1:{web}")
    console.wait_for(rf"Prefect UI \(management view\): +http://127.0.0.1:{prefect}")
    ldap_url = console.wait_for(r"Demo directory: (ldap://\S+)").group(1)
    scim_url = console.wait_for(r"Demo SCIM app \(Informatiesysteem \(APEX\)\): (http\S+)").group(1)
    github_url = console.wait_for(r"GitHub \(sandbox\): (http\S+)").group(1)
    for sandbox in (
        r"Microsoft Entra ID \(sandbox\)",
        r"\(Plesk sandbox\)",
        r"\(DirectAdmin sandbox\)",
    ):
        console.wait_for(rf"{sandbox}: https?://127\.0\.0\.1")
    starter = Path(console.wait_for(r"Configuration to start from: (\S+)").group(1))
    console.wait_for(r"Open one approval link as a second manager")
    links = re.findall(
        r"^  \S+@example\.test: (http\S+)$",
        console.wait_for(r"\(emails are in").string,
        flags=re.MULTILINE,
    )
    assert len(links) == 3  # three managers besides the requester
    assert "Approval link for Lars Smit: http" in console.text  # the run prints them too (outbox)
    api = f"http://127.0.0.1:{prefect}/api"
    (found,) = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"name": {"any_": ["offboard-E1042-jdevries"]}}},
    ).json()
    flow_run_id = found["id"]

    # the plan, in the email and on the page, names both systems
    home = tmp_path / "home" / "demo"
    mails = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in (home / "outbox").glob("*.eml")
    ]
    (to_lars,) = [m for m in mails if "lsmit@" in str(m["To"])]
    mail, page = text_of(to_lars), httpx.get(links[1], timeout=30).text  # type: ignore[arg-type]
    # Informatiesysteem (APEX): two groups and the sign-in; the directory: five groups, more
    apex_rows = len(re.findall(r"Systee?m: Informatiesysteem \(APEX\)\n", mail))
    directory_rows = len(re.findall(r"Systee?m: directory\n", mail))
    assert (apex_rows, directory_rows >= 5) == (3, True), mail
    assert page.count("<td>Informatiesysteem (APEX)</td>") == 3, page
    assert page.count("<td>directory</td>") == directory_rows, page

    for sandbox in ("Microsoft Entra ID (sandbox)", "GitHub (sandbox)"):
        assert f"<td>{sandbox}</td>" in page, sandbox
    assert "Laptop en toegangspas innemen" in mail  # the manual step, in Lars's Dutch

    assert decide(links[0], "approve").status_code == 200
    # every system is revoked; the run waits for Milan to attest the manual step
    waiting = wait_for_state(api, flow_run_id, "PAUSED", "COMPLETED", "FAILED")
    assert waiting["state"]["state_details"]["pause_key"].startswith("attest-"), waiting["state"]
    to_milan = [
        m
        for m in (
            email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for path in (home / "outbox").glob("*.eml")
        )
        if "mdijkstra@" in str(m["To"])
    ]
    # the laptop and badge, and what the Entra sandbox can only report (device, rule, list)
    assert len(to_milan) == 4, [str(m["Subject"]) for m in to_milan]
    for message in to_milan:
        (attest_link,) = re.findall(r"http\S+/attest/\S+", text_of(message))  # type: ignore[arg-type]
        with httpx.Client(timeout=30) as browser:
            form = browser.get(attest_link)
            assert form.status_code == 200, form.text
            done = browser.post(
                attest_link, data={"remark": "done", "csrf_token": csrf_of(form.text)}
            )
        assert done.status_code == 200, done.text
    run = wait_for_state(api, flow_run_id, "COMPLETED", "FAILED")
    assert run["state"]["type"] == "COMPLETED"
    assert run["name"] == "offboard-E1042-jdevries"

    # the configuration to start from: TOML, no secret in it; secrets.env holds them
    assert starter == (home / "starter" / "config.toml").resolve()
    config = tomllib.loads(starter.read_text())
    secrets_file = starter.with_name("secrets.env")
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    secret_values = read_env_file(secrets_file)
    assert not [name for name, value in secret_values.items() if value in starter.read_text()]
    assert not [name for name, value in secret_values.items() if value in console.text]
    by_kind = {c["kind"]: c for c in config["connectors"]}
    directory, apex = by_kind["ldap"], by_kind["scim"]

    # the GitHub sandbox, read over HTTP: Jan is no longer in the organisation
    github = by_kind["github"]
    assert github["base_url"] == github_url
    token = secret_values[github["token"].removeprefix("env:")]
    membership = httpx.get(
        f"{github_url}/orgs/{github['organization']}/memberships/jdevries-acme",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert membership.status_code == 404, membership.text
    colleague = httpx.get(
        f"{github_url}/orgs/{github['organization']}/memberships/bmulder-acme",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert colleague.status_code == 200, colleague.text

    # the SCIM app, read over HTTP: the leaver is inactive and in no group; colleagues stay
    assert apex["base_url"] == scim_url
    token = secret_values[apex["token"].removeprefix("env:")]
    with httpx.Client(
        base_url=scim_url + "/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as scim:
        (jan,) = scim.get("Users", params={"filter": 'userName eq "jdevries@example.test"'}).json()[
            "Resources"
        ]
        groups = scim.get("Groups").json()["Resources"]
    assert jan["active"] is False
    assert sorted(g["displayName"] for g in groups) == ["apex-admins", "apex-users"]
    for group in groups:
        members = {m["value"] for m in group.get("members", [])}
        assert members and jan["id"] not in members, group["displayName"]

    # the directory: the leaver is locked and in no group
    assert directory["url"] == ldap_url
    conn = ldap3.Connection(
        ldap3.Server(ldap_url),
        user=directory["bind_dn"],
        password=secret_values[directory["bind_password"].removeprefix("env:")],
        auto_bind=True,
    )
    try:
        leaver_dn = f"uid=jdevries,{directory['users_base']}"
        assert is_locked(conn, leaver_dn)
        assert groups_with(conn, directory["groups_base"], leaver_dn, "jdevries") == []
    finally:
        conn.unbind()

    printed = console.wait_for(r"OFFBOARDING_HOME=(\S+) offboarding audit verify").group(1)
    assert printed == str(home)  # the demo's data stays apart
    audit = subprocess.run(
        [*CLI, "audit", "verify"],
        env={**os.environ, "OFFBOARDING_HOME": printed, "OFFBOARDING_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stderr
    assert "hash chain verified" in audit.stdout
    stop_with_ctrl_c(console)
    assert (home / "offboarding.db").is_file()  # SQLite in the data dir
    assert list((home / "outbox").glob("*.eml"))
    assert not (tmp_path / "home" / "offboarding.db").exists()


def test_up_without_connectors_says_what_to_do(run_cli) -> None:  # type: ignore[no-untyped-def]
    console = run_cli("up")
    assert console.process.wait(timeout=60) == 2
    assert "No connectors configured" in console.text and "config.toml" in console.text


def test_up_refuses_default_secrets_in_production(run_cli) -> None:  # type: ignore[no-untyped-def]
    console = run_cli("up", env={"OFFBOARDING_ENV": "production"})
    assert console.process.wait(timeout=60) == 2
    assert "OFFBOARDING_HRIS_SECRET" in console.text


def test_up_runs_the_service_from_the_config_file_and_stops_on_ctrl_c(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    admin_password = secrets.token_urlsafe(16)
    with LocalDirectory.start(tmp_path / "slapd", admin_password=admin_password) as directory:
        home = tmp_path / "home"
        home.mkdir()
        seed_prefect_database(home, tmp_path)  # `demo` runs Prefect's migrations; not again
        (home / "config.toml").write_text(
            f"""
[[connectors]]
kind = "ldap"
url = "{directory.url}"
bind_dn = "{directory.admin_dn}"
bind_password = "env:TEST_DIRECTORY_PASSWORD"
users_base = "{directory.users_base}"
groups_base = "{directory.groups_base}"
lockout_policy_dn = "{directory.default_policy_dn}"
"""
        )
        web, prefect = free_port(), free_port()
        console = run_cli(
            "up",
            "--port",
            str(web),
            env={
                "OFFBOARDING_PREFECT_PORT": str(prefect),
                "TEST_DIRECTORY_PASSWORD": admin_password,
            },
        )
        checked = subprocess.run(
            [*CLI, "check"],
            cwd=tmp_path,
            env={
                **os.environ,
                "OFFBOARDING_HOME": str(home),
                "TEST_DIRECTORY_PASSWORD": admin_password,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "directory (ldap): ok" in checked.stdout, checked.stdout + checked.stderr
        assert checked.returncode == 1  # no managers configured: four-eyes is impossible
        assert "at least two managers" in checked.stdout
        console.wait_for("Press Ctrl-C to stop.")
        assert httpx.get(f"http://127.0.0.1:{web}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{prefect}/api/health").status_code == 200
        deployment = httpx.get(
            f"http://127.0.0.1:{prefect}/api/deployments/name/{Settings(home=home).deployment}"
        )
        assert deployment.status_code == 200
        retention = httpx.get(
            f"http://127.0.0.1:{prefect}/api/deployments/name/"
            f"{Settings(home=home).retention_deployment}"
        ).json()
        assert retention["schedules"][0]["schedule"]["cron"] == "30 3 * * *"  # daily, served
        assert admin_password not in console.text
        stop_with_ctrl_c(console)


def test_up_says_which_part_could_not_start(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket

    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[[connectors]]\nkind = "ldap"\nurl = "ldap://127.0.0.1:1"\n'
        'bind_dn = "cn=x"\nbind_password = "x"\nusers_base = "ou=p"\ngroups_base = "ou=g"\n'
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        console = run_cli("up", env={"OFFBOARDING_PREFECT_PORT": str(port)})
        assert console.process.wait(timeout=120) == 1
    assert "Could not start: the Prefect server" in console.text
    assert f"127.0.0.1:{port}" in console.text and "--prefect-port" in console.text


def test_up_refuses_a_connector_config_that_cannot_work(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[[connectors]]\nkind = "ldap"\nurl = "http://not-ldap"\nbind_dn = "cn=x"\n'
        'bind_password = "x"\nusers_base = "ou=p"\ngroups_base = "ou=g"\n'
    )
    console = run_cli("up")
    assert console.process.wait(timeout=60) == 2
    assert "config.toml: connectors[0].url: " in console.text
    assert "Traceback" not in console.text
