"""Active Directory: configuration, verified TLS connections, and the one request choke point.

Every bind is a simple bind inside LDAPS or StartTLS with the certificate verified
(`Tls(validate=CERT_REQUIRED, ca_certs_file, valid_names)`); plain ldap:// without StartTLS
is refused by the config. `AdClient._request` refuses writes in dry-run mode, logs writes
(DN and attribute names, never values) and maps ldap3 outcomes into the shared errors.
AD's bind refusals carry a `data NNN` sub-code; `bind_reason` says what each means.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors
from ldap3.core import results
from ldap3.utils.dn import parse_dn
from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import DryRunRefused, PermanentError, TransientError
from connectors.config import ConnectorConfig
from connectors.ldap_client import CERTIFICATE_EXCEPTIONS, OK_CODES, error_for

log = structlog.get_logger(__name__)

# What AD's "AcceptSecurityContext error, data NNN" sub-codes of invalidCredentials mean.
BIND_REASONS = {
    "525": "user not found",
    "52e": "invalid credentials",
    "530": "not permitted to sign in at this time",
    "531": "not permitted to sign in at this workstation",
    "532": "password expired",
    "533": "account disabled",
    "701": "account expired",
    "773": "user must reset password",
    "775": "account locked out",
}
_DATA_CODE = re.compile(r"data ([0-9a-f]{3})", re.IGNORECASE)


def bind_reason(message: str) -> tuple[str, str]:
    """(sub-code, readable reason) from an AD bind refusal's diagnostic message."""
    found = _DATA_CODE.search(message or "")
    if found is None:
        return "", "refused"
    code = found.group(1).lower()
    return code, BIND_REASONS.get(code, f"refused (data {code})")


class AdConfig(ConnectorConfig):
    """One Active Directory domain, reached over LDAPS or StartTLS with a verified certificate."""

    name: str = "Active Directory"
    """What the service calls this system."""
    kind: Literal["active_directory"] = "active_directory"
    url: str
    """ldaps://dc.example.com:636, or ldap://dc.example.com with start_tls = true."""
    start_tls: bool = False
    """Upgrade an ldap:// connection with StartTLS before binding."""
    ca_file: Path | None = None
    """CA bundle that signed the DC's certificate; the system's CAs when unset."""
    tls_server_name: str | None = None
    """The host name the DC's certificate must name; the url's host when unset."""
    bind_user: str
    """The service account: a userPrincipalName (svc-offboarding@example.com) or its DN."""
    bind_password: SecretStr
    """Its password (or bind_password_env / bind_password_file)."""
    base_dn: str
    """The domain's naming context, e.g. DC=example,DC=com."""
    users_base: str | None = None
    """Where leavers are searched (the whole domain when unset)."""
    disabled_ou: str
    """The OU disabled accounts are moved to, e.g. OU=Disabled Users,DC=example,DC=com."""
    match_attribute: Literal["employeeID", "sAMAccountName", "userPrincipalName", "mail"] = (
        "employeeID"
    )
    """The user attribute the leaver is found by."""
    match_value: Literal["employee_id", "email", "email_local_part"] | None = None
    """What of the leaver it is compared with; by default the email for mail and
    userPrincipalName, the HR id otherwise."""
    page_size: int = Field(default=500, gt=0, le=1000)
    """Entries per page of a search (AD answers at most MaxPageSize, 1000 by default)."""
    timeout_seconds: int = Field(default=10, gt=0)
    """Seconds to wait for the DC to connect or answer."""
    on_leave: Literal["disable", "delete"] = "disable"
    """What happens to the account: disable (and move to disabled_ou) or delete; the
    policy's on_leave for this connector wins."""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if not url.startswith(("ldap://", "ldaps://")):
            raise ValueError(f"url {url!r} must start with ldaps:// (or ldap:// with start_tls)")
        return url

    @field_validator("base_dn", "users_base", "disabled_ou")
    @classmethod
    def _valid_dn(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_dn(value)
            except ldap_errors.LDAPInvalidDnError as exc:
                raise ValueError(f"{value!r} is not a valid DN: {exc}") from exc
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {str(value)!r} does not exist or is not a file")
        return value

    @model_validator(mode="after")
    def _encrypted(self) -> AdConfig:
        ldaps = self.url.startswith("ldaps://")
        if ldaps and self.start_tls:
            raise ValueError("use either an ldaps:// url or start_tls, not both")
        if not ldaps and not self.start_tls:
            raise ValueError(
                "a simple bind must not travel in clear (and AD needs an encrypted connection "
                "to set passwords): use an ldaps:// url or set start_tls = true"
            )
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or self.url

    @property
    def expected_name(self) -> str:
        return self.tls_server_name or self.host

    @property
    def search_base(self) -> str:
        return self.users_base or self.base_dn


def build_tls(config: AdConfig) -> ldap3.Tls:
    """A Tls that verifies the DC's certificate against ca_file and the expected name."""
    return ldap3.Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=str(config.ca_file) if config.ca_file else None,
        valid_names=[config.expected_name],
    )


ConnectionFactory = Callable[[str, str], ldap3.Connection]  # (user, password) -> unbound


def default_connection_factory(config: AdConfig) -> ConnectionFactory:
    server = ldap3.Server(
        config.url,
        tls=build_tls(config),
        get_info=ldap3.NONE,
        connect_timeout=config.timeout_seconds,
    )

    def connect(user: str, password: str) -> ldap3.Connection:
        return ldap3.Connection(
            server,
            user=user,
            password=password,
            client_strategy=ldap3.SYNC,
            auto_referrals=False,  # never carry our credentials to a server a referral names
            raise_exceptions=False,
            receive_timeout=config.timeout_seconds,
        )

    return connect


def _certificate_problem(exc: BaseException) -> str | None:
    """What is wrong with the DC's certificate, when that is why `exc` happened."""
    text = str(exc)
    if "doesn't match any name" in text:
        return "name"
    if isinstance(exc, CERTIFICATE_EXCEPTIONS) or "CERTIFICATE_VERIFY_FAILED" in text:
        return "ca"
    return None


class AdClient:
    """Connections, dry-run and error mapping for the Active Directory connector."""

    def __init__(
        self, config: AdConfig, *, connect: ConnectionFactory | None = None, dry_run: bool = False
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self._connect = connect or default_connection_factory(config)

    @contextmanager
    def session(self) -> Iterator[ldap3.Connection]:
        """One connection bound as the service account, closed afterwards."""
        conn = self._connect(self.config.bind_user, self.config.bind_password.get_secret_value())
        try:
            refusal = self.open_and_bind(conn, self.config.bind_user)
            if refusal is not None:
                raise PermanentError(
                    f"{self.name}: the DC {self.config.host} refused the bind as "
                    f"{self.config.bind_user} ({refusal[1]}, data {refusal[0] or '?'}); "
                    "check bind_user and bind_password"
                )
            yield conn
        finally:
            try:
                conn.unbind()
            except ldap_errors.LDAPException as exc:
                log.debug("ldap unbind failed", connector=self.name, error=str(exc))

    def open_and_bind(self, conn: ldap3.Connection, who: str) -> tuple[str, str] | None:
        """Open (StartTLS if configured) and bind; the (data code, reason) of a refused bind."""
        self._guard("connect", conn.open)
        if self.config.start_tls and not conn.tls_started:
            self._guard("start_tls", conn.start_tls)
        self._guard("bind", conn.bind)
        result = conn.result or {}
        code = result.get("result", results.RESULT_SUCCESS)
        if code == results.RESULT_INVALID_CREDENTIALS:
            return bind_reason(result.get("message", ""))
        if code not in OK_CODES:
            raise error_for(
                code,
                result.get("description", ""),
                result.get("message", ""),
                f"{self.name}: bind as {who} at {self.config.host}",
            )
        return None

    def _guard(self, operation: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:
            problem = _certificate_problem(exc)
            host = self.config.host
            if problem == "name":
                raise PermanentError(
                    f"{self.name}: {host}: the DC's TLS certificate does not name "
                    f"{self.config.expected_name!r}; set tls_server_name to the name in the "
                    "certificate (the DC's FQDN), or give the DC a certificate for that name"
                ) from exc
            if problem == "ca":
                raise PermanentError(
                    f"{self.name}: {host}: the DC's TLS certificate was not signed by a CA in "
                    f"{self.config.ca_file or 'the system CA store'}; set ca_file to the CA that "
                    "issued the DC's certificate (e.g. your AD CS root)"
                ) from exc
            if isinstance(exc, ldap_errors.LDAPOperationResult):
                raise error_for(
                    exc.result,
                    exc.description or "",
                    exc.message or "",
                    f"{self.name}: {operation}",
                ) from exc
            if isinstance(
                exc,
                (ldap_errors.LDAPCommunicationError, ldap_errors.LDAPResponseTimeoutError, OSError),
            ):
                raise TransientError(f"{self.name}: {operation} at {host} failed: {exc}") from exc
            if isinstance(exc, ldap_errors.LDAPException):
                raise PermanentError(f"{self.name}: {operation} at {host} failed: {exc}") from exc
            raise

    def _request(
        self, conn: ldap3.Connection, operation: str, dn: str, *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        """The choke point: refuse writes in dry-run, call ldap3, map the result."""
        write = operation != "search"
        if write and self.dry_run:
            log.info("AD write skipped: dry run", connector=self.name, operation=operation, dn=dn)
            raise DryRunRefused(f"{self.name}: dry run, not sending {operation} {dn}")
        method = getattr(conn, operation)
        self._guard(f"{operation} {dn}", lambda: method(dn, *args, **kwargs))
        result: dict[str, Any] = conn.result or {}
        code = result.get("result", results.RESULT_SUCCESS)
        if code not in OK_CODES:
            raise error_for(
                code,
                result.get("description", ""),
                result.get("message", ""),
                f"{self.name}: {operation} {dn}",
            )
        if write:
            changes = args[0] if args and isinstance(args[0], dict) else {}
            log.info(
                "AD write",
                connector=self.name,
                operation=operation,
                dn=dn,
                attributes=sorted(changes),
            )
        return result

    def search(
        self,
        conn: ldap3.Connection,
        base: str,
        search_filter: str,
        attributes: list[str],
        *,
        scope: str = ldap3.SUBTREE,
    ) -> list[dict[str, Any]]:
        """Entries as {"dn", "raw": {lower-cased name: [bytes]}}, fetched page by page."""
        found: list[dict[str, Any]] = []
        cookie: bytes | None = None
        while True:
            self._request(
                conn,
                "search",
                base,
                search_filter,
                search_scope=scope,
                attributes=attributes,
                paged_size=self.config.page_size if scope != ldap3.BASE else None,
                paged_cookie=cookie,
            )
            for item in conn.response or []:
                if item.get("type") == "searchResEntry":
                    raw = {k.lower(): list(v) for k, v in item.get("raw_attributes", {}).items()}
                    found.append({"dn": item["dn"], "raw": raw})
            controls = (conn.result or {}).get("controls", {})
            cookie = controls.get("1.2.840.113556.1.4.319", {}).get("value", {}).get("cookie")
            if not cookie:
                return found

    def read(self, conn: ldap3.Connection, dn: str, attributes: list[str]) -> dict[str, Any] | None:
        """One entry (by DN or `<GUID=...>`), or None when it does not exist."""
        try:
            entries = self.search(conn, dn, "(objectClass=*)", attributes, scope=ldap3.BASE)
        except PermanentError as exc:
            if getattr(exc, "code", None) == results.RESULT_NO_SUCH_OBJECT:
                return None
            raise
        return entries[0] if entries else None

    def modify(self, conn: ldap3.Connection, dn: str, changes: dict[str, Any]) -> None:
        self._request(conn, "modify", dn, changes)
