"""The `offboarding` command group: one place where known failures become plain lines."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    pass


@dataclass
class _Seen:
    """What this invocation has read so far, so error messages can name it and hide secrets."""

    secrets: set[str] = field(default_factory=set)
    database_url: str | None = None


_seen = _Seen()
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")
_SECRET_HINTS = ("password", "secret", "token", "key")


def _redact(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    for secret in sorted(_seen.secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _remember_secrets(data: object, key: str = "") -> None:
    """Note every value stored under a secret-looking key (nested), or held in a SecretStr."""
    from pydantic import BaseModel, SecretStr

    if isinstance(data, BaseModel):
        data = dict(data)
    if isinstance(data, Mapping):
        for name, value in data.items():
            _remember_secrets(value, str(name))
    elif isinstance(data, list | tuple):
        for item in data:
            _remember_secrets(item, key)
    elif isinstance(data, SecretStr):
        _remember_secrets(data.get_secret_value(), "secret")
    elif (
        isinstance(data, str)
        and len(data) >= 4
        and any(hint in key.lower() for hint in _SECRET_HINTS)
        and not key.endswith(("_env", "_file"))  # names a variable or file, not the secret
        and not data.startswith("env:")
    ):
        _seen.secrets.add(data)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(_redact(message), fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _say(text: str) -> None:
    typer.echo(_redact(text))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^\[Errno -?\d+\] ", "", line)


def _explain(exc: Exception) -> str | None:
    """The plain message for a known kind of failure; None for anything else (a bug)."""
    import httpx
    from sqlalchemy.exc import DBAPIError

    from connectors.base import ConnectorError
    from offboarding.cli.configuration import _database_problem  # it imports this module
    from offboarding.notification.mail import MailError

    if isinstance(exc, ConnectorError):
        return f"{exc}\n(`offboarding check` tests every connector.)"
    if isinstance(exc, DBAPIError):
        return _database_problem(_seen.database_url, exc)
    if isinstance(exc, MailError):
        return f"Could not send email: {exc}"
    if isinstance(exc, httpx.TransportError):
        try:
            where = str(exc.request.url)
        except RuntimeError:
            where = "the server"
        return f"Could not reach {where}: {_first_line(exc)}"
    return None


class _Commands(TyperGroup):
    """Every command runs through `invoke`: known failures become a plain message here."""

    def invoke(self, ctx: Any) -> Any:
        _seen.secrets.clear()
        _seen.database_url = None
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _explain(exc)
            if message is None:
                raise
            _fail(message)


app = typer.Typer(
    help="Employee offboarding with four-eyes approval.",
    no_args_is_help=True,
    cls=_Commands,
    pretty_exceptions_show_locals=False,  # a traceback must never print a secret
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
hris_app = typer.Typer(help="Act as the HR system (for trying things out).", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(hris_app, name="hris")
approvals_app = typer.Typer(help="Approval links.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")

HostOption = Annotated[
    str | None, typer.Option(help="Address for the web app (default 127.0.0.1).")
]
PortOption = Annotated[int | None, typer.Option(help="Port for the web app (default 8080).")]
PrefectPortOption = Annotated[
    int | None,
    typer.Option(help="Port for the embedded Prefect server and its UI (default 4200)."),
]
