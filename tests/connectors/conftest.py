"""A real slapd per test, seeded with the demo organisation (about 80 ms each)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import Leaver
from demo.directory import DemoOrg, LocalDirectory, seed_demo_org

ADMIN_PASSWORD = "admin-secret-for-tests"
USER_PASSWORD = "Welkom-2024!"


@pytest.fixture
def user_password() -> str:
    """The password every seeded person starts with."""
    return USER_PASSWORD


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[LocalDirectory]:
    with LocalDirectory.start(tmp_path / "ldap", admin_password=ADMIN_PASSWORD) as running:
        yield running


@pytest.fixture
def demo_org(directory: LocalDirectory) -> DemoOrg:
    return seed_demo_org(directory, password=USER_PASSWORD)


@pytest.fixture
def ldap_config(directory: LocalDirectory, demo_org: DemoOrg) -> dict[str, Any]:
    return directory.connector_config(managers_group=demo_org.managers_group_dn)


def directory_state(directory: LocalDirectory) -> dict[str, dict[str, list[bytes]]]:
    """Every entry under the suffix with all its attributes, operational ones included
    (modifyTimestamp, pwdChangedTime, ...), as the rootdn reads it: what a write changes."""
    conn = directory.admin_connection()
    try:
        conn.search(directory.suffix, "(objectClass=*)", attributes=["*", "+"])
        return {
            item["dn"]: {name: sorted(values) for name, values in item["raw_attributes"].items()}
            for item in conn.response
            if item.get("type") == "searchResEntry"
        }
    finally:
        conn.unbind()


@pytest.fixture
def demo_leaver(demo_org: DemoOrg) -> Leaver:
    return Leaver(
        employee_id=demo_org.leaver_id,
        email=demo_org.leaver_email,
        display_name=demo_org.leaver_name,
    )


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(directory: Path, *, names: str) -> dict[str, Path]:
    """A throwaway CA and a server certificate it signed for `names` (an openssl SAN list)."""
    directory.mkdir(parents=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA",
        "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ldap",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    base = tmp_path_factory.mktemp("tls")
    return {
        "good": make_certificates(base / "good", names="IP:127.0.0.1,DNS:localhost"),
        "other": make_certificates(base / "other", names="IP:127.0.0.1,DNS:localhost"),
        "elsewhere": make_certificates(base / "elsewhere", names="DNS:ldap.elsewhere.test"),
    }
