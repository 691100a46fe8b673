"""A throwaway OpenLDAP server for the demo and the test suite.

`LocalDirectory.start()` writes a cn=config for one mdb database with the
memberof, refint and ppolicy overlays, starts `slapd` on 127.0.0.1 and creates
the base entries (people, groups, password policies) over LDAP, because the
overlays only act on entries written online.

slapd is started as the current user and receives SIGKILL when the thread that
started it ends (PR_SET_PDEATHSIG), so a killed test run leaves no server behind.
Start it from the main thread, or from a thread that outlives the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException

from demo.directory_config import config_ldif
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.wiring.processes import die_with_parent, free_port

__all__ = ["DemoOrg", "LocalDirectory", "LocalDirectoryError", "free_port", "seed_demo_org"]


class LocalDirectoryError(RuntimeError):
    """The local directory could not be set up or started."""


class LocalDirectory:
    """A running slapd with one database; stop it with `stop()` or use it as a context manager."""

    def __init__(
        self,
        *,
        workdir: Path,
        port: int,
        suffix: str,
        admin_password: str,
        process: subprocess.Popen[bytes],
        tls_port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = port
        self.tls_port = tls_port
        self._suffix = suffix
        self._admin_password = admin_password
        self._process = process

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        port: int | None = None,
        suffix: str = "dc=example,dc=test",
        admin_password: str,
        tls: tuple[Path, Path] | None = None,
        timeout: float = 10.0,
    ) -> LocalDirectory:
        """Build cn=config in `workdir`, start slapd and create the base entries.

        With `tls` (PEM certificate, PEM private key) the server offers StartTLS on
        `url` and also listens on `ldaps_url`.
        """
        if not suffix.lower().startswith("dc="):
            raise LocalDirectoryError(
                f"suffix {suffix!r} must start with dc= (e.g. dc=example,dc=test)"
            )
        slapd, slapadd = _tool("slapd"), _tool("slapadd")
        workdir = Path(workdir).resolve()
        config_dir, data_dir = workdir / "slapd.d", workdir / "data"
        for path in (config_dir, data_dir):
            if path.exists() and any(path.iterdir()):
                raise LocalDirectoryError(
                    f"{path} is not empty; give each directory a fresh workdir"
                )
            path.mkdir(parents=True, exist_ok=True)
        ldif = workdir / "config.ldif"
        ldif.touch(mode=0o600)
        ldif.write_text(
            config_ldif(workdir=workdir, suffix=suffix, admin_password=admin_password, tls=tls)
        )
        loaded = subprocess.run(  # noqa: S603 - our own arguments, no shell
            [slapadd, "-n0", "-F", str(config_dir), "-l", str(ldif)], capture_output=True, text=True
        )
        if loaded.returncode != 0:
            raise LocalDirectoryError(f"slapadd could not load cn=config:\n{loaded.stderr}")

        log_path, chosen = workdir / "slapd.log", port
        # a port found free may be taken by someone else before slapd binds it: try another
        for _ in range(1 if port is not None else 5):
            chosen = port if port is not None else free_port()
            tls_port = free_port() if tls else None
            urls = [f"ldap://127.0.0.1:{chosen}/"]
            urls += [f"ldaps://127.0.0.1:{tls_port}/"] if tls_port else []
            directory = cls(
                workdir=workdir,
                port=chosen,
                tls_port=tls_port,
                suffix=suffix,
                admin_password=admin_password,
                process=_spawn(slapd, config_dir, urls, log_path),
            )
            if directory._wait_until_ready(timeout):
                try:
                    directory._create_base_entries()
                except BaseException:
                    directory.stop()
                    raise
                return directory
        tail = log_path.read_text(errors="replace")[-2000:]
        raise LocalDirectoryError(f"slapd did not start on port {chosen}:\n{tail}")

    # -- addresses -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str | None:
        return f"ldaps://127.0.0.1:{self.tls_port}" if self.tls_port else None

    @property
    def suffix(self) -> str:
        return self._suffix

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self._suffix}"

    @property
    def admin_password(self) -> str:
        return self._admin_password

    @property
    def users_base(self) -> str:
        return f"ou=people,{self._suffix}"

    @property
    def groups_base(self) -> str:
        return f"ou=groups,{self._suffix}"

    @property
    def policies_base(self) -> str:
        return f"ou=policies,{self._suffix}"

    @property
    def default_policy_dn(self) -> str:
        return f"cn=default,{self.policies_base}"

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        """A `kind: ldap` connector config pointing at this directory as admin."""
        config: dict[str, Any] = {
            "name": "directory",
            "kind": "ldap",
            "url": self.url,
            "bind_dn": self.admin_dn,
            "bind_password": self._admin_password,
            "users_base": self.users_base,
            "groups_base": self.groups_base,
            "lockout_policy_dn": self.default_policy_dn,
        }
        config.update(overrides)
        return config

    # -- lifecycle -------------------------------------------------------------

    def admin_connection(self, *, timeout: int = 10) -> ldap3.Connection:
        """A connection bound as the rootdn; the caller unbinds it."""
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=timeout)
        return ldap3.Connection(
            server,
            user=self.admin_dn,
            password=self._admin_password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS,
            raise_exceptions=True,
            receive_timeout=timeout,
        )

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> LocalDirectory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_until_ready(self, timeout: float) -> bool:
        """True once an admin bind succeeds: slapd is up, and it is ours, not another server."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            try:
                self.admin_connection(timeout=1).unbind()
                return True
            except LDAPException:
                time.sleep(0.01)
        self.stop()
        return False

    def _create_base_entries(self) -> None:
        first_rdn_value = self._suffix.split(",")[0].split("=", 1)[1]
        conn = self.admin_connection()
        try:
            conn.add(
                self._suffix,
                ["dcObject", "organization"],
                {"dc": first_rdn_value, "o": first_rdn_value},
            )
            for ou in ("people", "groups", "policies"):
                conn.add(f"ou={ou},{self._suffix}", ["organizationalUnit"], {"ou": ou})
            conn.add(
                self.default_policy_dn,
                ["organizationalRole", "pwdPolicy"],
                {"cn": "default", "pwdAttribute": "userPassword", "pwdLockout": "TRUE"},
            )
        finally:
            conn.unbind()


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin")
    if found is None:
        raise LocalDirectoryError(
            f"{name} is not installed; install it with "
            "`apt-get install -y --no-install-recommends slapd ldap-utils`"
        )
    return found


def _spawn(
    slapd: str, config_dir: Path, urls: list[str], log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own arguments, no shell
            [slapd, "-d", "0", "-F", str(config_dir), "-h", " ".join(urls)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
