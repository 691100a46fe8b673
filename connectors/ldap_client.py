"""Configuration, connections and the one place LDAP results become shared errors.

Everything that talks to the directory goes through `LdapClient._request`: it
refuses writes in dry-run mode, logs every write (connector, DN, attribute
names; never values) and maps ldap3 exceptions and result codes into
`TransientError`, `PermanentError` and `AlreadyDone`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import ldap3
import structlog
from ldap3.core import exceptions as ldap_errors
from ldap3.core import results
from ldap3.utils.dn import parse_dn
from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import (
    AlreadyDone,
    ConnectorError,
    DryRunRefused,
    PermanentError,
    TransientError,
)
from connectors.config import ConnectorConfig

log = structlog.get_logger(__name__)

ConnectionFactory = Callable[[], ldap3.Connection]

READ_OPERATIONS = frozenset({"search", "compare"})

TRANSIENT_CODES = frozenset(
    {
        results.RESULT_TIME_LIMIT_EXCEEDED,
        results.RESULT_ADMIN_LIMIT_EXCEEDED,
        results.RESULT_BUSY,
        results.RESULT_UNAVAILABLE,
    }
)
ALREADY_DONE_CODES = frozenset(
    {results.RESULT_NO_SUCH_ATTRIBUTE, results.RESULT_ATTRIBUTE_OR_VALUE_EXISTS}
)
TRANSIENT_EXCEPTIONS = (
    ldap_errors.LDAPCommunicationError,
    ldap_errors.LDAPResponseTimeoutError,
    OSError,
)
CERTIFICATE_EXCEPTIONS = (ssl.SSLCertVerificationError, ldap_errors.LDAPCertificateError)
OK_CODES = frozenset(
    {results.RESULT_SUCCESS, results.RESULT_COMPARE_FALSE, results.RESULT_COMPARE_TRUE}
)


class LdapConfig(ConnectorConfig):
    """One OpenLDAP directory: where it is, who we bind as, and where people and groups live."""

    name: str = "directory"
    """What the service calls this directory."""
    kind: Literal["ldap"] = "ldap"
    url: str
    """ldap://host:port or ldaps://host:port."""
    bind_dn: str
    """The service account the connector binds as."""
    bind_password: SecretStr
    """Its password (or bind_password_env / bind_password_file)."""
    start_tls: bool = False
    """Upgrade an ldap:// connection with StartTLS."""
    ca_file: Path | None = None
    """CA bundle that signed the server certificate; the system's CAs when unset."""
    users_base: str
    """Where people live, e.g. ou=people,dc=example,dc=nl."""
    groups_base: str
    """Where groups live; memberships of groupOfNames and posixGroup are revoked."""
    match_attribute: Literal["uid", "mail", "employeeNumber"] = "employeeNumber"
    """How the leaver is found: employeeNumber and uid match the HR id, mail the email."""
    employee_id_attribute: str = "employeeNumber"
    """The attribute holding the HR id, for the people directory."""
    managers_group: str | None = None
    """Group whose members are managers who can approve."""
    managers: list[str] = []
    """HR ids of further managers who can approve."""
    lockout_policy_dn: str | None = None
    """The ppolicy default policy (olcPPolicyDefault); verify proves it has pwdLockout: TRUE."""
    empty_group_placeholder: str | None = ""
    """Put into a groupOfNames when the leaver is its last member (the schema forbids an
    empty one). The default, the empty DN, names no entry at all; set it to your refint
    overlay's olcRefintNothing value to match the rest of the directory, or to none to stop
    and report such groups for a person to handle."""
    timeout_seconds: int = Field(default=10, gt=0)
    """Seconds to wait for the server to connect or answer."""
    on_leave: Literal["disable", "delete"] = "disable"
    """What happens to the account: disable (lock) is the only choice here; set by the policy."""

    @field_validator("on_leave")
    @classmethod
    def _cannot_delete(cls, value: str, info: ValidationInfo) -> str:
        if value == "delete":
            raise ValueError(
                "this connector locks directory accounts and cannot delete them; set "
                f'[policy.on_leave] {info.data.get("name", "directory")} = "disable" (or leave '
                "it out) and remove leavers' entries with your directory's own tools"
            )
        return value

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if not url.startswith(("ldap://", "ldaps://")):
            raise ValueError(f"url {url!r} must start with ldap:// or ldaps://")
        return url

    @field_validator(
        "bind_dn",
        "users_base",
        "groups_base",
        "managers_group",
        "lockout_policy_dn",
        "empty_group_placeholder",
    )
    @classmethod
    def _valid_dn(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or (value == "" and info.field_name == "empty_group_placeholder"):
            return value
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
    def _one_tls_mode(self) -> LdapConfig:
        if self.start_tls and self.uses_ldaps:
            raise ValueError("use either an ldaps:// url or start_tls, not both")
        return self

    @property
    def uses_ldaps(self) -> bool:
        return self.url.startswith("ldaps://")

    @property
    def uses_tls(self) -> bool:
        return self.uses_ldaps or self.start_tls


def build_tls(config: LdapConfig) -> ldap3.Tls | None:
    """A Tls that verifies the server certificate and name; None for plain ldap://."""
    if not config.uses_tls:
        return None
    ca_file = str(config.ca_file) if config.ca_file else None
    return ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)


def build_server(config: LdapConfig) -> ldap3.Server:
    return ldap3.Server(
        config.url,
        tls=build_tls(config),
        get_info=ldap3.NONE,
        connect_timeout=config.timeout_seconds,
    )


def default_connection_factory(config: LdapConfig) -> ConnectionFactory:
    """Unbound connections to the configured server; `LdapClient` opens and binds them."""
    server = build_server(config)

    def connect() -> ldap3.Connection:
        return ldap3.Connection(
            server,
            user=config.bind_dn,
            password=config.bind_password.get_secret_value(),
            client_strategy=ldap3.SYNC,
            auto_referrals=False,  # never carry our credentials to a server a referral names
            raise_exceptions=False,
            receive_timeout=config.timeout_seconds,
        )

    return connect


class LdapResultError(PermanentError):
    """A permanent LDAP result, with its code for callers that handle one case."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class NoSuchEntry(LdapResultError):
    """The DN does not exist: a missing base is a configuration error, a missing group is not."""


def error_for(code: int, description: str, message: str, context: str) -> ConnectorError:
    """The shared error for an LDAP result code."""
    text = f"{context}: {description} ({code})" + (f": {message}" if message else "")
    if code in TRANSIENT_CODES:
        return TransientError(text)
    if code in ALREADY_DONE_CODES:
        return AlreadyDone(text)
    if code == results.RESULT_NO_SUCH_OBJECT:
        return NoSuchEntry(text, code)
    if code == results.RESULT_INSUFFICIENT_ACCESS_RIGHTS:
        text += "; give the bind account write access to this entry"
    return LdapResultError(text, code)


def _certificate_problem(exc: BaseException) -> bool:
    """True for a refused server certificate, also when ldap3 wraps it or lists it per address."""
    if isinstance(exc, CERTIFICATE_EXCEPTIONS):
        return True
    nested = [
        item for arg in exc.args for item in (arg if isinstance(arg, list | tuple) else [arg])
    ]
    return any(isinstance(item, BaseException) and _certificate_problem(item) for item in nested)


class LdapClient:
    """Connections, dry-run and error mapping shared by the connector and the people directory."""

    def __init__(
        self, config: LdapConfig, *, connect: ConnectionFactory | None = None, dry_run: bool = False
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self._connect = connect or default_connection_factory(config)

    @contextmanager
    def session(self) -> Iterator[ldap3.Connection]:
        """One bound connection for one piece of work, closed afterwards."""
        conn = self.bound_connection()
        try:
            yield conn
        finally:
            self.close_quietly(conn)

    def bound_connection(self) -> ldap3.Connection:
        """A new connection, bound as `bind_dn`; PermanentError when the bind is refused."""
        conn = self._guard("connect", self.config.url, self._connect)
        try:
            if not conn.bound and not self.open_and_bind(conn, self.config.bind_dn):
                raise PermanentError(
                    f"{self.name}: bind as {self.config.bind_dn} was refused (invalidCredentials); "
                    "check bind_dn and bind_password"
                )
        except BaseException:
            self.close_quietly(conn)
            raise
        return conn

    def close_quietly(self, conn: ldap3.Connection) -> None:
        """Unbind; a connection that cannot even say goodbye is closed all the same."""
        try:
            conn.unbind()
        except (ldap_errors.LDAPException, OSError) as exc:
            log.debug("ldap unbind failed", connector=self.name, error=str(exc))

    def open_and_bind(self, conn: ldap3.Connection, who: str) -> bool:
        """Open, StartTLS if configured, and bind; False when the credentials are refused."""
        if conn.closed:
            self._guard("connect", self.config.url, conn.open)
        if self.config.start_tls and not conn.tls_started:
            self._guard("start_tls", self.config.url, conn.start_tls)
        self._guard("bind", who, conn.bind)
        code = (
            conn.result.get("result", results.RESULT_SUCCESS)
            if conn.result
            else results.RESULT_SUCCESS
        )
        if code == results.RESULT_INVALID_CREDENTIALS:
            return False
        if code not in OK_CODES:
            raise error_for(
                code,
                conn.result["description"],
                conn.result.get("message", ""),
                f"{self.name}: bind as {who}",
            )
        return True

    def _guard(self, operation: str, target: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:
            if _certificate_problem(exc):
                raise PermanentError(
                    f"{self.name}: {operation} {target}: the server's TLS certificate was refused "
                    f"({exc}); check ca_file, and that the certificate names the host in url"
                ) from exc
            if isinstance(exc, ldap_errors.LDAPOperationResult):
                context = f"{self.name}: {operation} {target}"
                raise error_for(
                    exc.result, exc.description or "", exc.message or "", context
                ) from exc
            if isinstance(exc, TRANSIENT_EXCEPTIONS):
                raise TransientError(f"{self.name}: {operation} {target} failed: {exc}") from exc
            if isinstance(exc, ldap_errors.LDAPException):
                raise PermanentError(f"{self.name}: {operation} {target} failed: {exc}") from exc
            raise

    def _request(
        self, conn: ldap3.Connection, operation: str, dn: str, *args: Any, **kwargs: Any
    ) -> Any:
        """The choke point: refuse writes in dry-run, call ldap3, map the outcome."""
        write = operation not in READ_OPERATIONS
        if write and self.dry_run:
            log.info(
                "directory write skipped: dry run", connector=self.name, operation=operation, dn=dn
            )
            raise DryRunRefused(f"{self.name}: dry run, not sending {operation} {dn}")
        method = getattr(conn, operation)
        self._guard(operation, dn, lambda: method(dn, *args, **kwargs))
        result = conn.result or {}
        code = result.get("result", results.RESULT_SUCCESS)
        if code not in OK_CODES:
            raise error_for(
                code,
                result.get("description", ""),
                result.get("message", ""),
                f"{self.name}: {operation} {dn}",
            )
        if write:
            changes = args[0] if args else kwargs.get("changes", {})
            log.info(
                "directory write",
                connector=self.name,
                operation=operation,
                dn=dn,
                attributes=sorted(changes) if isinstance(changes, dict) else [],
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
        """Entries as {"dn": ..., "attributes": {name: [str, ...]}}; raw values decoded as UTF-8."""
        self._request(
            conn, "search", base, search_filter, search_scope=scope, attributes=attributes
        )
        found = []
        for item in conn.response or []:
            if item.get("type") != "searchResEntry":
                continue
            raw = item.get("raw_attributes", {})
            values = {
                name.lower(): [v.decode("utf-8", "replace") for v in raw[name]] for name in raw
            }
            found.append({"dn": item["dn"], "attributes": values})
        return found

    def read(
        self, conn: ldap3.Connection, dn: str, attributes: list[str]
    ) -> dict[str, list[str]] | None:
        """One entry's attributes (lower-cased names), or None when it does not exist."""
        try:
            entries = self.search(conn, dn, "(objectClass=*)", attributes, scope=ldap3.BASE)
        except NoSuchEntry:
            return None
        return entries[0]["attributes"] if entries else None

    def modify(
        self, conn: ldap3.Connection, dn: str, changes: dict[str, list[tuple[str, list[str]]]]
    ) -> None:
        self._request(conn, "modify", dn, changes)
