"""The Samba AD DC test peer: provisioned and seeded once per session, a copy per test.

`samba_golden` provisions a DC (~5 s), starts it once so it generates its TLS keys, seeds
the demo organisation with nested groups (demo/samba_ad.py), and stops it: that stopped
directory is the golden copy. Each test module starts its own copy on its own loopback
address (~1 s); `samba_dc` puts the leaver back as seeded before each test (~0.2 s), so
every test starts with Jan de Vries enabled, in OU=Staff and in his groups.
The tests are skipped, saying why, only when samba is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from connectors.base import Leaver
from demo.organisation import EMPLOYEES, GROUPS_OF_NAMES, LEAVER_ID, email_of
from demo.samba_ad import (
    BASE_DN,
    GROUPS_OU,
    STAFF_OU,
    SambaDC,
    add_user,
    provision,
    samba_missing,
    seed_demo,
)

ADMIN_PASSWORD = "Adm1n-Secret-for-tests!"
USER_PASSWORD = "Welkom-2024!x"
LEAVER_UID = next(uid for employee_id, uid, *_ in EMPLOYEES if employee_id == LEAVER_ID)
_VOLATILE = {
    "lastlogon",
    "lastlogontimestamp",
    "logoncount",
    "badpasswordtime",
    "dscorepropagationdata",
}


@pytest.fixture(scope="session")
def samba_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = samba_missing()
    if missing:
        pytest.skip(missing)
    base = tmp_path_factory.mktemp("samba")
    provisioned = provision(base / "provisioned", admin_password=ADMIN_PASSWORD)
    dc = SambaDC.start(provisioned, base / "golden", admin_password=ADMIN_PASSWORD)
    try:
        seed_demo(dc, password=USER_PASSWORD)
    finally:
        dc.stop()
    return base / "golden"


@pytest.fixture(scope="module")
def samba_module_dc(
    samba_golden: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SambaDC]:
    """One DC per test module (a copy of the golden one); `samba_dc` resets the leaver."""
    dc = SambaDC.start(
        samba_golden, tmp_path_factory.mktemp("dc") / "dc", admin_password=ADMIN_PASSWORD
    )
    try:
        yield dc
    finally:
        dc.stop()


@pytest.fixture
def samba_dc(samba_module_dc: SambaDC) -> SambaDC:
    """The module's DC with Jan de Vries as seeded: enabled, in OU=Staff, in his groups."""
    admin_do(samba_module_dc, reset_leaver)
    return samba_module_dc


@pytest.fixture
def ad_config(samba_dc: SambaDC) -> dict[str, Any]:
    return samba_dc.connector_config()


def reset_leaver(conn: ldap3.Connection) -> None:
    """Put the leaver back as seeded (re-created when a test deleted him)."""
    home = f"CN=Jan de Vries,{STAFF_OU}"
    conn.search(BASE_DN, f"(sAMAccountName={LEAVER_UID})", attributes=["memberOf"])
    found = [e for e in conn.response if e.get("type") == "searchResEntry"]
    if not found:
        add_user(conn, LEAVER_UID, LEAVER_ID, "Jan de Vries", USER_PASSWORD)
        member_of: list[str] = []
    else:
        if found[0]["dn"] != home:
            conn.modify_dn(found[0]["dn"], "CN=Jan de Vries", new_superior=STAFF_OU)
        member_of = [str(dn).lower() for dn in found[0]["attributes"]["memberOf"]]
        password = f'"{USER_PASSWORD}"'.encode("utf-16-le")
        conn.modify(
            home,
            {
                "userAccountControl": [(ldap3.MODIFY_REPLACE, ["512"])],
                "accountExpires": [(ldap3.MODIFY_REPLACE, ["9223372036854775807"])],
                "unicodePwd": [(ldap3.MODIFY_REPLACE, [password])],
            },
        )
        conn.modify(home, {"pwdLastSet": [(ldap3.MODIFY_REPLACE, ["-1"])]})
    for group, members in GROUPS_OF_NAMES.items():
        dn = f"CN={group},{GROUPS_OU}"
        if LEAVER_UID in members and dn.lower() not in member_of:
            conn.modify(dn, {"member": [(ldap3.MODIFY_ADD, [home])]})


@pytest.fixture
def ad_leaver() -> Leaver:
    return Leaver(employee_id=LEAVER_ID, email=email_of(LEAVER_UID), display_name="Jan de Vries")


def ad_state(dc: SambaDC) -> dict[str, dict[str, list[bytes]]]:
    """Every object in the domain, every attribute the connector could change (uSNChanged
    included, so any write shows), as Administrator reads it; logon bookkeeping left out."""
    conn = dc.admin_connection()
    try:
        entries = conn.extend.standard.paged_search(
            BASE_DN, "(objectClass=*)", attributes=["*", "uSNChanged"], paged_size=500
        )
        return {
            item["dn"]: {
                name: sorted(values)
                for name, values in item["raw_attributes"].items()
                if name.lower() not in _VOLATILE
            }
            for item in entries
            if item.get("type") == "searchResEntry"
        }
    finally:
        conn.unbind()


def read_user(dc: SambaDC, search_filter: str, attributes: list[str]) -> dict[str, Any] | None:
    conn = dc.admin_connection()
    try:
        conn.search(BASE_DN, search_filter, attributes=attributes)
        found = [e for e in conn.response if e.get("type") == "searchResEntry"]
        return {"dn": found[0]["dn"], **found[0]["attributes"]} if found else None
    finally:
        conn.unbind()


def admin_do(dc: SambaDC, action: Callable[[ldap3.Connection], Any]) -> Any:
    conn = dc.admin_connection()
    try:
        return action(conn)
    finally:
        conn.unbind()
