"""A throwaway Samba Active Directory DC for the demo and the test suite (real AD semantics).

`provision()` makes a stopped DC directory (~5 s); `SambaDC.start()` copies one into a
fresh directory, rewrites the paths in its smb.conf and runs `samba -i -M single` with
stdin a pipe, so the DC exits when we close it or die (and PR_SET_PDEATHSIG as well).
Samba's LDAP ports are fixed at 389/636, so each DC binds to its own loopback address
(`interfaces = 127.0.0.N`, `bind interfaces only`): Samba only binds to addresses an
interface has, so the address is added to `lo` when we may (root / CAP_NET_ADMIN) and
removed again on stop; otherwise the DC uses 127.0.0.1 and only one can run at a time.

`running_samba_ad()` seeds the demo organisation (demo/organisation.py) with nested groups:
Jan de Vries (E1042) is a direct member of developers, vpn-users, laravel-admins and
legacy-ftp; developers is in engineering, engineering and vpn-users are in all-staff, and
vpn-users is in remote-access.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from demo.organisation import EMPLOYEES, GROUPS_OF_NAMES, LEAVER_ID, email_of
from offboarding.wiring.processes import die_with_parent

NAME = "Active Directory"
REALM, DOMAIN, HOST_NAME = "EXAMPLE.TEST", "EXAMPLE", "DC1"
BASE_DN = "DC=example,DC=test"
TLS_NAME = "DC1.example.test"  # the name in the certificate Samba generates on first start
STAFF_OU, GROUPS_OU, DISABLED_OU = (
    f"OU=Staff,{BASE_DN}",
    f"OU=Groups,{BASE_DN}",
    f"OU=Disabled Users,{BASE_DN}",
)
# nested groups: group -> groups it is a member of
NESTED: dict[str, tuple[str, ...]] = {
    "developers": ("engineering",),
    "engineering": ("all-staff",),
    "vpn-users": ("all-staff", "remote-access"),
}
MISSING = (
    "The Active Directory DC is left out: samba is not installed; install the packages "
    "samba samba-dsdb-modules samba-ad-provision samba-vfs-modules (scripts/bootstrap)"
)


class SambaUnavailable(RuntimeError):
    """samba or samba-tool is not installed, or the DC did not start."""


def samba_missing() -> str | None:
    """Why a DC cannot run here, or None."""
    if shutil.which("samba") is None or shutil.which("samba-tool") is None:
        return MISSING
    return None


def provision(target: Path, *, admin_password: str) -> Path:
    """A stopped, provisioned DC in `target` (must not exist); ~5 s."""
    target.mkdir(parents=True)
    empty = target / "empty.conf"
    empty.touch()
    options = {
        "interfaces": "127.0.0.1",
        "bind interfaces only": "yes",
        "server services": "ldap",
        "log file": f"{target}/log.samba",
        "pid directory": f"{target}/pid",
        "ncalrpc dir": f"{target}/ncalrpc",
        "winbindd socket directory": f"{target}/winbindd",
        "ntp signd socket directory": f"{target}/ntp_signd",
    }
    command = [
        "samba-tool", "domain", "provision", "-s", str(empty), "--server-role=dc",
        f"--realm={REALM}", f"--domain={DOMAIN}", f"--host-name={HOST_NAME}",
        "--dns-backend=NONE", "--use-rfc2307", f"--adminpass={admin_password}",
        f"--targetdir={target}", "--host-ip=127.0.0.1",
        *(f"--option={key}={value}" for key, value in options.items()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        raise SambaUnavailable(f"samba-tool domain provision failed:\n{done.stderr[-2000:]}")
    _make_tls(target / "private" / "tls")
    return target


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True)  # noqa: S603,S607
    if done.returncode != 0:
        raise SambaUnavailable(f"openssl {args[0]} failed: {done.stderr[-500:]}")


def _make_tls(tls: Path) -> None:
    """A CA and a DC certificate for TLS_NAME where Samba looks for them (private/tls), made
    with openssl in ~0.1 s; Samba would otherwise spend seconds generating its own."""
    tls.mkdir(parents=True, exist_ok=True)
    ca, ca_key = tls / "ca.pem", tls / "ca.key"
    cert, key, csr, ext = tls / "cert.pem", tls / "key.pem", tls / "dc.csr", tls / "dc.ext"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
        "/CN=Example Test Root CA", "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={TLS_NAME}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext.write_text(f"subjectAltName=DNS:{TLS_NAME}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "30", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip
    for private in (key, ca_key):
        private.chmod(0o600)


def _listening(address: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.2):
        return True
    return False


def _claim_loopback() -> tuple[str, bool]:
    """(address, added): a 127.0.0.N nobody serves LDAP on; added to lo when we may."""
    for n in random.sample(range(10, 250), 20):
        address = f"127.0.0.{n}"
        if _listening(address, 636) or _listening(address, 389):
            continue
        added = subprocess.run(  # noqa: S603
            ["ip", "addr", "add", f"{address}/32", "dev", "lo"],  # noqa: S607
            capture_output=True,
        )
        if added.returncode == 0:
            return address, True
        break
    return "127.0.0.1", False


def _release_loopback(address: str) -> None:
    subprocess.run(  # noqa: S603
        ["ip", "addr", "del", f"{address}/32", "dev", "lo"],  # noqa: S607
        capture_output=True,
    )


def _sockets(directory: str, names: list[str]) -> list[str]:
    """The unix sockets a stopped DC leaves behind (they cannot be copied)."""
    return [n for n in names if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode)]


@dataclass
class SambaDC:
    """A running DC; `stop()` it (or use `running_dc`)."""

    workdir: Path
    address: str
    admin_password: str = field(repr=False)
    process: subprocess.Popen[bytes] = field(repr=False)
    added_address: bool = False

    @classmethod
    def start(
        cls, golden: Path, workdir: Path, *, admin_password: str, timeout: float = 60.0
    ) -> SambaDC:
        """Copy the stopped DC `golden` to `workdir` and start it on its own loopback address."""
        shutil.copytree(golden, workdir, symlinks=True, ignore=_sockets)
        address, added = _claim_loopback()
        if not added and _listening(address, 636):
            raise SambaUnavailable(
                f"another LDAP server listens on {address}:636 and no other loopback address "
                "could be added (needs root): stop it, or run one DC at a time"
            )
        conf = workdir / "etc" / "smb.conf"
        text = conf.read_text().replace(str(golden), str(workdir))
        conf.write_text(
            re.sub(r"(?m)^(\s*)interfaces = .*$", rf"\g<1>interfaces = {address}", text)
        )
        log = (workdir / "samba.out").open("wb")
        process = subprocess.Popen(  # noqa: S603
            ["samba", "-i", "-M", "single", "-s", str(conf)],  # noqa: S607
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # the DC dies with us
        )
        dc = cls(workdir, address, admin_password, process, added)
        try:
            dc._wait_until_ready(timeout)
        except BaseException:
            dc.stop()
            raise
        return dc

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        problem = "not started"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if (self.workdir / "private" / "tls" / "ca.pem").exists():
                try:
                    self.admin_connection().unbind()
                    return
                except LDAPException as exc:
                    problem = str(exc)
            time.sleep(0.05)
        tail = (self.workdir / "samba.out").read_text(errors="replace")[-1500:]
        raise SambaUnavailable(f"the Samba DC on {self.address} did not start ({problem}):\n{tail}")

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{self.address}:636"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "private" / "tls" / "ca.pem"

    @property
    def admin_user(self) -> str:
        return f"Administrator@{REALM}"

    def admin_connection(self) -> ldap3.Connection:
        """A connection bound over LDAPS as Administrator; the caller unbinds it."""
        tls = ldap3.Tls(
            validate=ssl.CERT_REQUIRED, ca_certs_file=str(self.ca_file), valid_names=[TLS_NAME]
        )
        server = ldap3.Server(self.ldaps_url, tls=tls, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server,
            user=self.admin_user,
            password=self.admin_password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS,
            raise_exceptions=True,
            receive_timeout=10,
        )

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        """A `kind: active_directory` connector config for this DC, bound as Administrator."""
        config: dict[str, Any] = {
            "name": NAME,
            "kind": "active_directory",
            "url": self.ldaps_url,
            "ca_file": str(self.ca_file),
            "tls_server_name": TLS_NAME,
            "bind_user": self.admin_user,
            "bind_password": self.admin_password,
            "base_dn": BASE_DN,
            "disabled_ou": DISABLED_OU,
        }
        config.update(overrides)
        return config

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()  # samba -i exits at EOF on stdin
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.added_address:
            _release_loopback(self.address)
            self.added_address = False


def add_user(conn: ldap3.Connection, uid: str, employee_id: str, name: str, password: str) -> str:
    """An enabled user in OU=Staff with a password (needs the encrypted connection)."""
    given, _, surname = name.partition(" ")
    dn = f"CN={name},{STAFF_OU}"
    conn.add(
        dn,
        ["top", "person", "organizationalPerson", "user"],
        {
            "sAMAccountName": uid,
            "userPrincipalName": email_of(uid),
            "mail": email_of(uid),
            "employeeID": employee_id,
            "givenName": given,
            "sn": surname,
            "displayName": name,
            "unicodePwd": f'"{password}"'.encode("utf-16-le"),
            "userAccountControl": 512,
        },
    )
    return dn


def add_group(conn: ldap3.Connection, name: str, members: list[str]) -> str:
    dn = f"CN={name},{GROUPS_OU}"
    conn.add(dn, ["top", "group"], {"sAMAccountName": name})
    if members:
        conn.modify(dn, {"member": [(ldap3.MODIFY_ADD, members)]})
    return dn


def seed_base(conn: ldap3.Connection) -> None:
    for ou in (STAFF_OU, GROUPS_OU, DISABLED_OU):
        conn.add(ou, ["organizationalUnit"])


def seed_demo(dc: SambaDC, *, password: str) -> dict[str, str]:
    """OUs, the demo people and their (nested) groups; returns uid -> DN."""
    conn = dc.admin_connection()
    try:
        seed_base(conn)
        dns = {
            uid: add_user(conn, uid, employee_id, f"{given} {surname}", password)
            for employee_id, uid, given, surname, *_ in EMPLOYEES
        }
        groups = {
            name: add_group(conn, name, [dns[m] for m in members])
            for name, members in GROUPS_OF_NAMES.items()
        }
        for parent in sorted({p for ps in NESTED.values() for p in ps} - groups.keys()):
            groups[parent] = add_group(conn, parent, [])
        for child, parents in NESTED.items():
            for parent in parents:
                conn.modify(groups[parent], {"member": [(ldap3.MODIFY_ADD, [groups[child]])]})
    finally:
        conn.unbind()
    return dns


@dataclass(frozen=True)
class SambaAd:
    """The running, seeded demo DC."""

    dc: SambaDC
    leaver_id: str
    people: dict[str, str]  # uid -> DN

    @property
    def admin_password(self) -> str:
        return self.dc.admin_password

    def connector_config(self) -> dict[str, Any]:
        return self.dc.connector_config(match_attribute="employeeID")


@contextlib.contextmanager
def running_samba_ad(*, admin_password: str, user_password: str) -> Iterator[SambaAd]:
    """Provision, start and seed a DC in a temporary directory; stopped and removed on exit.

    Raises SambaUnavailable (saying what to install) when samba is missing.
    """
    missing = samba_missing()
    if missing:
        raise SambaUnavailable(missing)
    with tempfile.TemporaryDirectory(prefix="offboarding-samba-") as home:
        golden = provision(Path(home) / "golden", admin_password=admin_password)
        dc = SambaDC.start(golden, Path(home) / "dc", admin_password=admin_password)
        try:
            people = seed_demo(dc, password=user_password)
            yield SambaAd(dc, LEAVER_ID, people)
        finally:
            dc.stop()
