"""The throwaway OpenLDAP server behind `offboarding demo` and the connector tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from ldap3.core.exceptions import LDAPInsufficientAccessRightsResult, LDAPSocketOpenError

from demo.directory import (
    DemoOrg,
    LocalDirectory,
    LocalDirectoryError,
    free_port,
    seed_demo_org,
)

ADMIN_PASSWORD = "admin-secret-for-tests"
PASSWORD = "Welkom-2024!"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    with LocalDirectory.start(tmp_path / "ldap", admin_password=ADMIN_PASSWORD) as running:
        yield running


@pytest.fixture
def org(directory: LocalDirectory) -> DemoOrg:
    return seed_demo_org(directory, password=PASSWORD)


def entries(
    directory: LocalDirectory, base: str, search_filter: str, attributes: list[str]
) -> dict[str, dict]:
    conn = directory.admin_connection()
    try:
        conn.search(base, search_filter, attributes=attributes)
        return {e.entry_dn: e.entry_attributes_as_dict for e in conn.entries}
    finally:
        conn.unbind()


def bind(directory: LocalDirectory, dn: str, password: str) -> bool:
    conn = ldap3.Connection(ldap3.Server(directory.url), user=dn, password=password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_addresses(directory: LocalDirectory) -> None:
    assert directory.url == f"ldap://127.0.0.1:{directory.port}"
    assert directory.admin_dn == "cn=admin,dc=example,dc=test"
    assert directory.users_base == "ou=people,dc=example,dc=test"
    assert directory.groups_base == "ou=groups,dc=example,dc=test"
    assert directory.default_policy_dn == "cn=default,ou=policies,dc=example,dc=test"
    config = directory.connector_config(name="ldap-demo")
    assert (
        config["name"] == "ldap-demo" and config["lockout_policy_dn"] == directory.default_policy_dn
    )


def test_base_entries_and_lockout_policy(directory: LocalDirectory) -> None:
    policy = entries(
        directory,
        directory.default_policy_dn,
        "(objectClass=pwdPolicy)",
        ["pwdLockout", "pwdAttribute"],
    )
    assert policy[directory.default_policy_dn] == {
        "pwdLockout": ["TRUE"],
        "pwdAttribute": ["userPassword"],
    }
    found = entries(directory, directory.suffix, "(objectClass=organizationalUnit)", ["ou"])
    assert sorted(found) == sorted(
        [directory.users_base, directory.groups_base, directory.policies_base]
    )


def test_start_and_stop(tmp_path: Path) -> None:
    started = time.perf_counter()
    directory = LocalDirectory.start(
        tmp_path / "ldap", admin_password=ADMIN_PASSWORD, suffix="dc=acme,dc=test"
    )
    assert time.perf_counter() - started < 5
    with directory:
        assert directory.running and directory.admin_dn == "cn=admin,dc=acme,dc=test"
        directory.admin_connection().unbind()
    assert not directory.running
    with pytest.raises(LDAPSocketOpenError):
        directory.admin_connection()


def test_explicit_port(tmp_path: Path) -> None:
    port = free_port()
    with LocalDirectory.start(
        tmp_path / "ldap", admin_password=ADMIN_PASSWORD, port=port
    ) as directory:
        assert directory.url.endswith(f":{port}")


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(LocalDirectoryError, match="did not start"):
            LocalDirectory.start(
                tmp_path / "ldap", admin_password=ADMIN_PASSWORD, port=taken.getsockname()[1]
            )


def test_used_workdir_is_refused(directory: LocalDirectory) -> None:
    with pytest.raises(LocalDirectoryError, match="not empty"):
        LocalDirectory.start(directory.workdir, admin_password=ADMIN_PASSWORD)


def test_seeded_organisation(directory: LocalDirectory, org: DemoOrg) -> None:
    people = entries(
        directory, directory.users_base, "(objectClass=inetOrgPerson)", ["employeeNumber", "mail"]
    )
    assert len(people) == len(org.employee_ids) >= 20
    assert sorted(p["employeeNumber"][0] for p in people.values()) == org.employee_ids
    groups = entries(
        directory,
        directory.groups_base,
        "(|(objectClass=groupOfNames)(objectClass=posixGroup))",
        ["cn"],
    )
    assert sorted(groups) == org.group_dns and len(groups) >= 8
    assert org.leaver_dn in people and people[org.leaver_dn]["mail"] == ["jdevries@example.test"]
    assert (org.leaver_id, org.leaver_name, org.requester_id) == ("E1042", "Jan de Vries", "E0007")


def test_leaver_groups(directory: LocalDirectory, org: DemoOrg) -> None:
    assert len(org.leaver_group_dns) >= 4
    member_of = entries(directory, org.leaver_dn, "(objectClass=*)", ["memberOf"])[org.leaver_dn][
        "memberOf"
    ]
    posix = entries(directory, directory.groups_base, f"(memberUid={org.leaver_uid})", ["cn"])
    assert (
        sorted([*member_of, *posix]) == org.leaver_group_dns
    )  # memberof overlay ran: entries added online
    assert posix, "the leaver should be in a posixGroup"
    members = entries(directory, directory.groups_base, "(objectClass=groupOfNames)", ["member"])
    alone = [dn for dn, attrs in members.items() if attrs["member"] == [org.leaver_dn]]
    assert alone == [f"cn=legacy-ftp,{directory.groups_base}"]


def test_managers(directory: LocalDirectory, org: DemoOrg) -> None:
    members = entries(directory, org.managers_group_dn, "(objectClass=*)", ["member"])[
        org.managers_group_dn
    ]["member"]
    numbers = entries(directory, directory.users_base, "(employeeNumber=*)", ["employeeNumber"])
    assert sorted(numbers[dn]["employeeNumber"][0] for dn in members) == org.manager_ids
    assert len(org.manager_ids) >= 4
    assert org.requester_id in org.manager_ids
    assert org.leaver_id not in org.manager_ids
    assert len(set(org.manager_ids) - {org.requester_id}) >= 2


def test_people_sign_in_with_the_seed_password_stored_hashed(
    directory: LocalDirectory, org: DemoOrg
) -> None:
    assert bind(directory, org.leaver_dn, PASSWORD)
    stored = entries(directory, org.leaver_dn, "(objectClass=*)", ["userPassword"])[org.leaver_dn][
        "userPassword"
    ]
    assert str(stored[0]).startswith("{SSHA}")


def test_permanent_lock_refuses_sign_in(directory: LocalDirectory, org: DemoOrg) -> None:
    conn = directory.admin_connection()
    conn.modify(
        org.leaver_dn, {"pwdAccountLockedTime": [(ldap3.MODIFY_REPLACE, ["000001010000Z"])]}
    )
    conn.unbind()
    assert not bind(directory, org.leaver_dn, PASSWORD)


def test_people_read_but_do_not_write(directory: LocalDirectory, org: DemoOrg) -> None:
    reader = ldap3.Connection(
        ldap3.Server(directory.url),
        user=f"uid=sjansen,{directory.users_base}",
        password=PASSWORD,
        auto_bind=True,
        raise_exceptions=True,
    )
    reader.search(
        org.leaver_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["cn", "userPassword"]
    )
    assert reader.entries[0].entry_attributes_as_dict == {
        "cn": ["Jan de Vries"],
        "userPassword": [],
    }
    with pytest.raises(LDAPInsufficientAccessRightsResult):
        reader.modify(org.managers_group_dn, {"member": [(ldap3.MODIFY_ADD, [org.leaver_dn])]})
    reader.unbind()
    anonymous = ldap3.Connection(ldap3.Server(directory.url), auto_bind=True)
    anonymous.search(directory.users_base, "(uid=*)")
    assert anonymous.entries == []
    anonymous.unbind()


def test_deleted_person_leaves_their_groups(directory: LocalDirectory, org: DemoOrg) -> None:
    conn = directory.admin_connection()
    conn.delete(org.leaver_dn)
    conn.unbind()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # refint updates groups in the background
        if not entries(directory, directory.groups_base, f"(member={org.leaver_dn})", ["cn"]):
            break
        time.sleep(0.02)
    assert not entries(directory, directory.groups_base, f"(member={org.leaver_dn})", ["cn"])
    legacy = f"cn=legacy-ftp,{directory.groups_base}"
    assert entries(directory, legacy, "(objectClass=*)", ["member"])[legacy]["member"] == [
        f"cn=nobody,{directory.suffix}"
    ]


def test_slapd_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from demo.directory import LocalDirectory
        directory = LocalDirectory.start(Path({str(tmp_path / "ldap")!r}), admin_password="x")
        print(directory.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert parent.stdout is not None
        slapd_pid = int(parent.stdout.readline())
        os.kill(slapd_pid, 0)  # alive
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(slapd_pid):
            time.sleep(0.02)
        assert not _alive(slapd_pid)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of a killed parent is reaped by init; a zombie counts as gone
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())
