"""Helpers the tests share (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

import re
import secrets
from email.message import EmailMessage

LINK = re.compile(r"https?://[^\s\"'<>]+/approvals/[A-Za-z0-9._\-]+")


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return part.get_content()  # type: ignore[no-any-return]


def link_in(message: EmailMessage) -> str:
    links = LINK.findall(text_of(message))
    assert links, "no approval link in the email"
    return links[0]


def random_secret() -> str:
    return secrets.token_urlsafe(24)


# -- the running service ----------------------------------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import ldap3  # noqa: E402

CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no csrf_token in the confirmation page"
    return found.group(1)


def decide(link: str, decision: str, reason: str = "") -> httpx.Response:
    """What a manager does: open the link (GET), then press a button (POST)."""
    with httpx.Client(timeout=60) as browser:
        page = browser.get(link)
        assert page.status_code == 200, page.text
        return browser.post(
            link, data={"decision": decision, "reason": reason, "csrf_token": csrf_of(page.text)}
        )


def prefect(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A call to Prefect's API. On SQLite, Prefect answers 503 while its database is busy
    (its own client retries those): so do the tests, a bounded number of times."""
    response = httpx.request(method, url, timeout=30, **kwargs)
    for _attempt in range(20):
        if response.status_code != 503:
            break
        response = httpx.request(method, url, timeout=30, **kwargs)
    return response


def flow_run(api_url: str, flow_run_id: str) -> dict[str, Any]:
    response = prefect("GET", f"{api_url}/flow_runs/{flow_run_id}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def wait_for_state(
    api_url: str, flow_run_id: str, *types: str, timeout: float = 180
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = flow_run(api_url, flow_run_id)
        if run["state"]["type"] in types:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run stayed {run.get('state', {}).get('type')}, wanted {types}")


def groups_with(conn: ldap3.Connection, base: str, dn: str, uid: str) -> list[str]:
    conn.search(
        base,
        f"(|(member={ldap3.utils.conv.escape_filter_chars(dn)})(memberUid={uid}))",
        attributes=["cn"],
    )
    return sorted(e.entry_dn for e in conn.entries)


def is_locked(conn: ldap3.Connection, dn: str) -> bool:
    conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["pwdAccountLockedTime"])
    return bool(conn.entries and conn.entries[0]["pwdAccountLockedTime"].values)


def can_bind(url: str, dn: str, password: str) -> bool:
    conn = ldap3.Connection(ldap3.Server(url), user=dn, password=password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def send_leaver(stack: Any, employee_id: str, uid: str, name: str) -> httpx.Response:
    """HR's signed termination event for a demo employee, requested by the demo requester."""
    from offboarding.intake.client import send_event, termination_event

    return send_event(
        base_url=stack.running.web_url,
        secret=stack.settings.hris_secret.get_secret_value(),
        event=termination_event(
            employee_id=employee_id,
            email=f"{uid}@example.test",
            display_name=name,
            requested_by=stack.org.requester_id,
        ),
    )


def run_of(stack: Any, case_id: str, timeout: float = 180) -> str:
    """The case's flow run id, once the dispatcher has created the run (the intake answers
    202 as soon as the case is stored; the run is created right after, in the background)."""
    from sqlmodel import Session

    from offboarding.domain.models import Case

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(stack.engine) as session:
            case = session.get(Case, case_id)
            if case is not None and case.flow_run_id:
                return str(case.flow_run_id)
        time.sleep(0.1)
    raise AssertionError(f"no flow run was created for case {case_id} within {timeout:.0f} s")


def waiting_case(
    stack: Any, employee_id: str, uid: str, name: str
) -> tuple[str, str, list[EmailMessage]]:
    """A leaver's case whose run waits for its approval: (case id, flow run id, the
    approval emails)."""
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    requests = stack.mailbox.wait_for(
        lambda m: case_id in text_of(m) and "approvals/" in text_of(m)
    )
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    return case_id, flow_run_id, list(requests)


def until(condition: Any, what: str, timeout: float = 60) -> Any:
    """Poll `condition` until it gives something true; its value, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -- Prefect's own database, migrated once per test process -------------------------------

_PREFECT_TEMPLATE: list[Path] = []


def migrated_prefect_database(tmp: Path) -> Path:
    """A Prefect SQLite database with Prefect's migrations applied, made once per test process:
    each stack starts from a copy instead of migrating its own (about 15 s of CPU each)."""
    if not _PREFECT_TEMPLATE:
        home = tmp / "prefect-template"
        home.mkdir(parents=True, exist_ok=True)
        database = home / "prefect.db"
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env={
                **os.environ,
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
            },
            check=True,
            capture_output=True,
        )
        _PREFECT_TEMPLATE.append(database)
    return _PREFECT_TEMPLATE[0]


def seed_prefect_database(home: Path, tmp: Path) -> None:
    """Give the data dir `home` a copy of the migrated Prefect database, as if `up` had run
    before: its Prefect server then starts without running Prefect's migrations."""
    prefect_home = home / "prefect"
    prefect_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_prefect_database(tmp), prefect_home / "prefect.db")
