"""DirectAdmin's CMD_API_* commands, through the shared HTTP choke point.

Documentation followed (DirectAdmin "Legacy API" / directadmin.com/api.html, "All about
API", "API Access: Login Keys"):

- authentication is HTTP basic `user:password`; a login key is used in place of the
  password and can be limited to the CMD_API_* commands it may run and to IP addresses;
- every command takes GET or POST; writes are sent as POST with a JSON body ("You can pass
  valid JSON into the POST parameter ... if you prefer JSON over url-encoded data");
- answers are url-encoded (`parse_str`), lists in `list[]`; with `json=yes` they are JSON;
- a failure is HTTP 200 too, with `error=1&text=...&details=...` in the body (or the same
  keys in JSON): read here and raised, never taken for success;
- an older server that refuses the credentials may answer with its HTML login page.
"""

from __future__ import annotations

import base64
from typing import Literal
from urllib.parse import parse_qsl

import httpx
from pydantic import SecretStr

from connectors.base import PermanentError
from connectors.http import HttpClient, VendorError
from connectors.panel_common import PanelConfig

NEEDED_COMMANDS = (
    "CMD_API_SHOW_DOMAINS",
    "CMD_API_POP",
    "CMD_API_EMAIL_FORWARDERS",
    "CMD_API_FTP",
    "CMD_API_LOGIN_KEYS",
)
_REFUSED_HINTS = ("not allowed", "login key")


class DirectAdminConfig(PanelConfig):
    """One DirectAdmin user account (the one that owns the mail domains)."""

    name: str = "directadmin"
    """What the service calls this system."""
    kind: Literal["directadmin"] = "directadmin"
    username: str
    """The DirectAdmin user that owns the mail domains (the login key's user)."""
    login_key: SecretStr
    """A login key of that user allowing only the CMD_API_* commands the connector needs
    (or login_key_env / login_key_file)."""
    own_login_key_name: str = ""
    """The name of the login key the connector signs in with: never listed as the leaver's."""


class DirectAdminError(PermanentError):
    """`error=1` in a 200 answer."""

    def __init__(self, message: str, text: str, details: str) -> None:
        super().__init__(message)
        self.text = text
        self.details = details


class DirectAdminApi(HttpClient):
    """The shared HTTP base, speaking CMD_API_*."""

    config: DirectAdminConfig
    credentials_hint = (
        "check username and login_key: a DirectAdmin login key of that user, allowing "
        + ", ".join(NEEDED_COMMANDS)
    )

    def auth_headers(self) -> dict[str, str]:
        pair = f"{self.config.username}:{self.config.login_key.get_secret_value()}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    def default_headers(self) -> dict[str, str]:
        return {"Accept": "text/plain, application/json"}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        """An error status with DirectAdmin's url-encoded `text`/`details` (or JSON)."""
        fields = dict(parse_qsl(response.text.strip(), keep_blank_values=True))
        if "text" not in fields:
            return super().vendor_error(response)
        details = fields.get("details", "")
        return VendorError(f"{fields['text']}: {details}" if details else fields["text"])

    def read(self, client: httpx.Client, command: str, **params: str) -> list[tuple[str, str]]:
        """A command that changes nothing (GET), as its url-encoded pairs."""
        response = self._request(client, "GET", command, params=params)
        return self._answer(command, response)

    def write(self, client: httpx.Client, command: str, **params: str) -> list[tuple[str, str]]:
        """A command that changes something (POST, JSON body); refused in a dry run."""
        response = self._request(client, "POST", command, body=params)
        return self._answer(command, response)

    def _answer(self, command: str, response: httpx.Response) -> list[tuple[str, str]]:
        text = response.text
        where = f"{self.name}: {command} on {self.config.base_url}"
        if "json" in response.headers.get("Content-Type", ""):
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise PermanentError(f"{where} answered JSON that is not an object")
            pairs = [(str(k), str(v)) for k, v in body.items()]
        elif text.lstrip()[:1] == "<":
            raise PermanentError(
                f"{where} answered with an HTML page, not the API: {self.credentials_hint}; "
                "and set base_url to the panel's address (https://host:2222)"
            )
        else:
            pairs = parse_qsl(text.strip(), keep_blank_values=True)
        fields = dict(pairs)
        if fields.get("error") == "1":
            raise self._refusal(where, command, fields.get("text", ""), fields.get("details", ""))
        return pairs

    def _refusal(self, where: str, command: str, text: str, details: str) -> DirectAdminError:
        said = f"{text}: {details}" if details else text
        message = f"{where} failed: {said or '(no text)'}"
        if any(hint in said.lower() for hint in _REFUSED_HINTS):
            message += f"; allow {command} on the login key of {self.config.username}"
        return DirectAdminError(message, text, details)


def as_list(pairs: list[tuple[str, str]]) -> list[str]:
    """The `list[]` values of an answer."""
    return [value for key, value in pairs if key == "list[]"]


def as_map(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """An answer of `name=value` pairs (error/text/details left out)."""
    return {k: v for k, v in pairs if k not in ("error", "text", "details", "list[]")}


def nested(value: str) -> dict[str, str]:
    """A url-encoded value inside an answer (CMD_API_POP full_list: quota=..&suspended=..)."""
    return dict(parse_qsl(value, keep_blank_values=True))
