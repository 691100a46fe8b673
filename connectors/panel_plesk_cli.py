"""Plesk's REST API v2 and its CLI gateway, through the shared HTTP choke point.

- REST: `GET /api/v2/server`, `/api/v2/domains`, `/api/v2/cli/commands` with the
  administrator's API key in `X-API-Key` (Plesk "About REST API"; keys are made with
  `plesk bin secret_key --create`). Errors are 4xx/5xx with `{"code": ..., "message": ...}`,
  which the shared `vendor_error` reads.
- CLI gateway: `POST /api/v2/cli/{command}/call` with `{"params": [...]}` answers HTTP 200
  with `{"code", "stdout", "stderr"}` (the shape of `pm_ApiCli::call` in the Plesk
  extensions guide): a non-zero `code` is the utility's failure and is raised here, with
  its stderr, never as success.

The gateway is POST for reads too (`mail --info`): a dry run must still read. Reads go
through `PleskCli.info`, which only accepts `--info`, on a twin client built without
dry-run; every other call goes through the dry-run-aware one and is refused there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from connectors.base import PermanentError
from connectors.http import HttpClient
from connectors.panel_common import PanelConfig

_NOT_FOUND_HINTS = ("does not exist", "not found", "unable to find", "no such")
_SECRET_OPTIONS = frozenset({"-passwd", "-password"})


class PleskConfig(PanelConfig):
    """One Plesk server: where its API is, the API key, the mail domains and policy."""

    name: str = "plesk"
    """What the service calls this system."""
    kind: Literal["plesk"] = "plesk"
    api_key: SecretStr
    """A Plesk REST API key of the administrator (X-API-Key), or api_key_env / api_key_file."""


class CliFailed(PermanentError):
    """A Plesk utility ended with a non-zero exit code."""

    def __init__(self, message: str, code: int, stderr: str) -> None:
        super().__init__(message)
        self.code = code
        self.stderr = stderr

    @property
    def not_found(self) -> bool:
        return any(hint in self.stderr.lower() for hint in _NOT_FOUND_HINTS)


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def fields(self) -> dict[str, str]:
        """`Key: value` lines of an `--info` output, keys lower-cased."""
        found: dict[str, str] = {}
        for line in self.stdout.splitlines():
            key, colon, value = line.partition(":")
            if colon and key.strip():
                found.setdefault(key.strip().lower(), value.strip())
        return found


def shown(params: list[str]) -> str:
    """The parameters as they may appear in logs and errors: secrets hidden."""
    out: list[str] = []
    for index, value in enumerate(params):
        hidden = index > 0 and params[index - 1] in _SECRET_OPTIONS
        out.append("[redacted]" if hidden else value)
    return " ".join(out)


class PleskApi(HttpClient):
    """The shared HTTP base, speaking Plesk REST and the CLI gateway."""

    config: PleskConfig
    credentials_hint = (
        "check api_key: it must be a REST API key of the Plesk administrator, sent as "
        "X-API-Key (create one with `plesk bin secret_key --create`)"
    )

    def auth_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.config.api_key.get_secret_value()}

    def get_json(self, client: httpx.Client, path: str) -> Any:
        response = self._request(client, "GET", path)
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentError(
                f"{self.name}: GET {self.config.base_url}/{path} did not answer JSON; set "
                "base_url to the server's address (https://host:8443), without /api/v2"
            ) from exc

    def call(self, client: httpx.Client, command: str, params: list[str]) -> CliResult:
        """Run `plesk bin <command> <params>` through the CLI gateway."""
        response = self._request(
            client, "POST", f"api/v2/cli/{command}/call", body={"params": params}
        )
        try:
            body = response.json()
            result = CliResult(int(body["code"]), str(body["stdout"]), str(body["stderr"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise PermanentError(
                f"{self.name}: the CLI gateway answered {command} without code/stdout/stderr; "
                f"check that {self.config.base_url} is a Plesk server with REST API v2"
            ) from exc
        if result.code != 0:
            stderr = _without_secrets(result.stderr.strip(), params)
            raise CliFailed(
                f"{self.name}: plesk bin {command} {shown(params)} failed on "
                f"{self.config.base_url} (exit {result.code}): {stderr or '(no message)'}",
                result.code,
                stderr,
            )
        return result


class PleskCli:
    """Reads (`--info`) that a dry run may make, and writes that it may not."""

    def __init__(self, writer: PleskApi, reader: PleskApi) -> None:
        self.writer = writer
        self.reader = reader

    def info(self, client: httpx.Client, command: str, name: str) -> dict[str, str] | None:
        """The `--info` fields of an object, or None when the panel has no such object."""
        try:
            return self.reader.call(client, command, ["--info", name]).fields()
        except CliFailed as exc:
            if exc.not_found:
                return None
            raise

    def run(self, client: httpx.Client, command: str, params: list[str]) -> CliResult:
        return self.writer.call(client, command, params)


def _without_secrets(text: str, params: list[str]) -> str:
    for index, value in enumerate(params):
        if index > 0 and params[index - 1] in _SECRET_OPTIONS and value:
            text = text.replace(value, "[redacted]")
    return text
