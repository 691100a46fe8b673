"""Configuration, HTTP sessions and the one place SCIM responses become shared errors.

Everything that talks to the SCIM service goes through `ScimClient._request`: it
refuses writes in dry-run mode, logs every write (connector, method, path and
status; never the token or a body) and maps transport errors and HTTP statuses
into `TransientError`, `PermanentError` and the `ScimError` family below.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from ipaddress import ip_address
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from connectors.base import ConnectorError, PermanentError, TransientError

log = structlog.get_logger(__name__)

SCIM_JSON = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PAGE_SIZE = 100
MAX_PAGES = 1000  # a server that ignores startIndex must not keep us paging forever
_LOOPBACK_NAMES = frozenset({"localhost"})


class ScimConfig(BaseModel):
    """One SCIM 2.0 service provider: where it is, the token, and how leavers are matched."""

    model_config = ConfigDict(extra="forbid")

    name: str = "scim"
    kind: Literal["scim"] = "scim"
    base_url: str  # the SCIM root, e.g. https://app.example.com/scim/v2
    token: SecretStr  # sent as "Authorization: Bearer ..."
    match_attribute: Literal["userName", "externalId"] = "userName"
    match_value: Literal["email", "employee_id"] = "email"  # which value of the leaver
    on_leave: Literal["deactivate", "delete"] = "deactivate"
    timeout_seconds: float = Field(default=10, gt=0)
    ca_file: Path | None = None  # CA bundle for https; system CAs when unset
    verify: bool = True  # check the server's TLS certificate; switch off only for a lab

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"base_url {value!r} is not a URL: {exc}") from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url {value!r} must be an https:// URL")
        if url.scheme == "http" and not _is_loopback(url.host):
            raise ValueError(
                f"base_url {value!r} would send the token unencrypted; use https:// "
                "(plain http:// is only accepted for 127.0.0.1 and localhost)"
            )
        if url.query or url.fragment:
            raise ValueError(f"base_url {value!r} must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"ca_file {str(value)!r} does not exist or is not a file")
        return value

    @field_validator("verify")
    @classmethod
    def _verify_with_ca(cls, value: bool, info: ValidationInfo) -> bool:
        # a field validator, not a model one: its error names the field and not the token
        if not value and info.data.get("ca_file") is not None:
            raise ValueError("verify is false but ca_file is set; drop one of them")
        return value


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def filter_string(value: str) -> str:
    """A SCIM filter string literal (RFC 7644 §3.4.2.2): a JSON string, `"` and `\\` escaped."""
    return json.dumps(value, ensure_ascii=False)


def resource_path(endpoint: str, resource_id: str) -> str:
    return f"{endpoint}/{quote(resource_id, safe='')}"


def etag_of(response: httpx.Response, resource: dict[str, Any]) -> str | None:
    """The resource's version: the ETag header, else meta.version (RFC 7644 §3.14)."""
    meta = resource.get("meta")
    version = meta.get("version") if isinstance(meta, dict) else None
    return response.headers.get("ETag") or (version if isinstance(version, str) else None)


# -- the errors callers handle case by case ------------------------------------------


class DryRunRefused(ConnectorError):
    """A write was attempted by a connector built with dry_run=True; nothing was sent."""


class RetryLater(TransientError):
    """Throttled or unavailable; `retry_after` is the delay in seconds the server asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ScimError(PermanentError):
    """A SCIM error response, with its status and scimType for callers that handle one case."""

    def __init__(self, message: str, status: int, scim_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.scim_type = scim_type


class ResourceNotFound(ScimError):
    """404: the user or group does not exist (any more)."""


class PreconditionFailed(ScimError):
    """412: the resource changed since it was read (its ETag no longer matches)."""


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _scim_error_body(response: httpx.Response) -> tuple[str, str | None]:
    """The `detail` and `scimType` of a SCIM error body, or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip(), None
    if not isinstance(body, dict):
        return str(body)[:200], None
    detail, scim_type = body.get("detail"), body.get("scimType")
    return (
        str(detail) if detail else response.reason_phrase,
        str(scim_type) if scim_type else None,
    )


def _certificate_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ScimClient:
    """HTTP sessions, dry-run and error mapping for the SCIM connector."""

    def __init__(
        self,
        config: ScimConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self._transport = transport

    @cached_property
    def _tls(self) -> ssl.SSLContext | bool:
        """Built once: loading the CA bundle takes tens of milliseconds."""
        if not self.config.verify or self.config.base_url.startswith("http://"):
            return False  # nothing to verify on plain http (loopback only, see ScimConfig)
        return ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None
        )

    @contextmanager
    def session(self) -> Iterator[httpx.Client]:
        """One HTTP client for one piece of work, closed afterwards. Redirects are not followed."""
        with httpx.Client(
            base_url=self.config.base_url + "/",
            headers={
                "Authorization": f"Bearer {self.config.token.get_secret_value()}",
                "Accept": f"{SCIM_JSON}, application/json",
            },
            timeout=self.config.timeout_seconds,
            verify=self._tls,
            transport=self._transport,
            follow_redirects=False,
        ) as client:
            yield client

    def _request(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        if_match: str | None = None,
    ) -> httpx.Response:
        """The choke point: refuse writes in dry-run, send, map the outcome to the shared errors."""
        write = method != "GET"
        if write and self.dry_run:
            log.info("scim write skipped: dry run", connector=self.name, method=method, path=path)
            raise DryRunRefused(f"{self.name}: dry run, not sending {method} {path}")
        headers = {"Content-Type": SCIM_JSON} if body is not None else {}
        if if_match:
            headers["If-Match"] = if_match
        where = f"{self.name}: {method} {self.config.base_url}/{path}"
        try:
            response = client.request(
                method,
                path,
                params=params,
                content=json.dumps(body).encode() if body is not None else None,
                headers=headers,
            )
        except httpx.TransportError as exc:
            if _certificate_problem(exc):
                raise PermanentError(
                    f"{where}: the server's TLS certificate was refused ({exc}); check ca_file, "
                    "and that the certificate names the host in base_url"
                ) from exc
            raise TransientError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if write:
            log.info(
                "scim write",
                connector=self.name,
                method=method,
                path=path,
                status=response.status_code,
                conditional=bool(if_match),
            )
        if response.is_success:
            return response
        raise self._error_for(response, where)

    def _error_for(self, response: httpx.Response, where: str) -> ConnectorError:
        status = response.status_code
        detail, scim_type = _scim_error_body(response)
        text = f"{where}: HTTP {status}" + (f" {scim_type}" if scim_type else "")
        text += f": {detail}" if detail else ""
        if status == 429 or (status >= 500 and status != 501):
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            suffix = f"; the server asks to retry after {delay:.0f} s" if delay is not None else ""
            return RetryLater(text + suffix, delay)
        if status in (401, 403):
            return PermanentError(
                f"{self.name}: {self.config.base_url} refused the request "
                f"(HTTP {status}: {detail}); check the token and the rights it carries"
            )
        if status == 404:
            return ResourceNotFound(text, status, scim_type)
        if status == 412:
            return PreconditionFailed(text, status, scim_type)
        if 300 <= status < 400:
            return PermanentError(
                f"{text}: redirected to {response.headers.get('Location', '?')}; "
                "set base_url to the SCIM root the server answers on"
            )
        return ScimError(text, status, scim_type)

    # -- reading --------------------------------------------------------------------

    def get_json(
        self, client: httpx.Client, path: str, params: dict[str, str] | None = None
    ) -> tuple[dict[str, Any], httpx.Response]:
        response = self._request(client, "GET", path, params=params)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise PermanentError(
                f"{self.name}: GET {self.config.base_url}/{path} did not answer with a JSON "
                "object; check that base_url is the SCIM root (e.g. .../scim/v2)"
            )
        return body, response

    def read(self, client: httpx.Client, path: str) -> tuple[dict[str, Any], str | None] | None:
        """A resource and its ETag, or None when it does not exist."""
        try:
            resource, response = self.get_json(client, path)
        except ResourceNotFound:
            return None
        return resource, etag_of(response, resource)

    def search(self, client: httpx.Client, endpoint: str, scim_filter: str) -> list[dict[str, Any]]:
        """Every resource matching a filter, following the list pages (RFC 7644 §3.4.2.4)."""
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            params = {"filter": scim_filter, "startIndex": str(len(found) + 1)}
            params["count"] = str(PAGE_SIZE)
            try:
                page, _response = self.get_json(client, endpoint, params)
            except ResourceNotFound as exc:
                raise PermanentError(
                    f"{exc}; the server has no {endpoint} endpoint there: check that base_url "
                    "is the SCIM root (e.g. https://app.example.com/scim/v2)"
                ) from exc
            resources = page.get("Resources") or []
            found.extend(r for r in resources if isinstance(r, dict))
            total = page.get("totalResults")
            if not resources or not isinstance(total, int) or len(found) >= total:
                return found
        raise PermanentError(
            f"{self.name}: {endpoint}?filter={scim_filter} did not end after {MAX_PAGES} pages"
        )
