"""The shared base for connectors that speak HTTP: one choke point for every request.

`HttpClient._request` is the only place a request leaves. It

- refuses every write (anything but GET, HEAD, OPTIONS) when the connector was built
  with `dry_run=True`, before anything is sent (`DryRunRefused`);
- maps transport errors, status codes and the vendor's error body (`vendor_error`, the
  per-connector hook) into the shared error set: `TransientError` (network trouble, 429,
  5xx but 501, with the server's `Retry-After`), `PermanentError` (401/403, redirects, a
  refused certificate), `NotFound` (404), `PreconditionFailed` (412), `HttpError` (the
  rest, with status and the vendor's error code);
- honours `Retry-After` on 429/503 by waiting and sending again (tenacity), as long as the
  total wait stays within `retry_budget_seconds`; past that the `TransientError` (with
  `retry_after`) goes up to the flow, which retries the step later;
- logs method, path and status, never a header value or a body; `connectors.redaction`
  hides credentials wherever a header or URL is shown, httpx's own request log included.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import structlog
from pydantic import Field, ValidationInfo, field_validator
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)
from tenacity.stop import stop_base

from connectors.base import ConnectorError, DryRunRefused, PermanentError, TransientError
from connectors.config import ConnectorConfig
from connectors.holdoff import HoldOff
from connectors.redaction import redact_headers, redact_httpx_log, redact_url

log = structlog.get_logger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost"})


class HttpConfig(ConnectorConfig):
    """Settings every HTTP connector has."""

    base_url: str
    """The API root, e.g. https://app.example.com/scim/v2 (https; http only on loopback)."""
    timeout_seconds: float = Field(default=10, gt=0)
    """Seconds to wait for the server to connect or answer."""
    ca_file: Path | None = None
    """CA bundle for https; the system's CAs when unset."""
    verify: bool = True
    """Check the server's TLS certificate; switch off only for a lab."""
    retry_budget_seconds: float = Field(default=30, ge=0)
    """How long, in total, to wait when the server asks to retry later (Retry-After)."""
    max_requests_per_second: float | None = Field(default=None, gt=0)
    """The server's documented rate limit: at most this many requests per second, across
    every flow run on this machine; none: no pacing (a 429's Retry-After is still obeyed)."""

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
                f"base_url {value!r} would send credentials unencrypted; use https:// "
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


class HttpError(PermanentError):
    """An error response, with its status and the vendor's error code (e.g. SCIM's scimType)."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(HttpError):
    """404: the object does not exist (any more)."""


class PreconditionFailed(HttpError):
    """412: the object changed since it was read (its ETag no longer matches)."""


@dataclass(frozen=True)
class VendorError:
    """What a vendor's error body says: a human detail and the vendor's own error code."""

    detail: str
    code: str | None = None


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


def _certificate_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            seen
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _asked_to_wait(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and exc.retry_after is not None


def _requested_wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return float(getattr(exc, "retry_after", 0) or 0)


class _WaitBudget(stop_base):
    """Stop when the next wait would take the total time waited past the budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, state: RetryCallState) -> bool:
        return state.idle_for + state.upcoming_sleep > self.seconds


class HttpClient:
    """Sessions, dry-run, retries and error mapping shared by every HTTP connector.

    Subclasses give `auth_headers` (credentials), optionally `default_headers`,
    `vendor_error` (how the vendor's error body reads) and `credentials_hint`.
    """

    content_type = "application/json"
    credentials_hint = "check the credentials and the rights they carry"
    max_attempts = 5

    def __init__(
        self,
        config: HttpConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        holdoff: HoldOff | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self._transport = transport
        self._sleep = sleep
        # a Retry-After told to any process holds for all of them (see connectors.holdoff)
        self._holdoff = holdoff if holdoff is not None else HoldOff.from_environment()
        self._server = str(httpx.URL(config.base_url).copy_with(path="/", query=None))
        redact_httpx_log()

    # -- the hooks ----------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        return {}

    def default_headers(self) -> dict[str, str]:
        return {"Accept": "application/json"}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        """The vendor's error body; this default reads `detail`, `message` or `error`."""
        try:
            body = response.json()
        except ValueError:
            return VendorError(response.text[:200].strip() or response.reason_phrase)
        if not isinstance(body, dict):
            return VendorError(str(body)[:200])
        detail = next((body[k] for k in ("detail", "message", "error") if body.get(k)), None)
        code = body.get("code") or body.get("type")
        return VendorError(
            str(detail) if detail else response.reason_phrase, str(code) if code else None
        )

    # -- sessions and the choke point ---------------------------------------------------

    @cached_property
    def _tls(self) -> ssl.SSLContext | bool:
        """Built once: loading the CA bundle takes tens of milliseconds."""
        if not self.config.verify or self.config.base_url.startswith("http://"):
            return False  # nothing to verify on plain http (loopback only, see HttpConfig)
        cafile = str(self.config.ca_file) if self.config.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    @contextmanager
    def session(self) -> Iterator[httpx.Client]:
        """One HTTP client for one piece of work, closed afterwards. Redirects are not followed."""
        with httpx.Client(
            base_url=self.config.base_url + "/",
            headers={**self.default_headers(), **self.auth_headers()},
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
        params: Mapping[str, str] | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (again, when the server asks to wait and the budget allows);
        refuse writes in a dry run; map the outcome into the shared errors."""
        if method not in SAFE_METHODS and self.dry_run:
            log.info("http write skipped: dry run", connector=self.name, method=method, path=path)
            raise DryRunRefused(f"{self.name}: dry run, not sending {method} {path}")
        retrying = Retrying(
            retry=retry_if_exception(_asked_to_wait),
            wait=_requested_wait,
            stop=stop_after_attempt(self.max_attempts)
            | _WaitBudget(self.config.retry_budget_seconds),
            sleep=self._sleep,
            before_sleep=self._log_wait,
            reraise=True,
        )
        send = self._send
        return retrying(send, client, method, path, params=params, body=body, headers=headers)

    def _log_wait(self, state: RetryCallState) -> None:
        log.info(
            "http retry after",
            connector=self.name,
            seconds=state.upcoming_sleep,
            attempt=state.attempt_number,
        )

    def _send(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        body: Any,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        sent_headers = dict(headers or {})
        if body is not None:
            sent_headers["Content-Type"] = self.content_type
        where = f"{self.name}: {method} {redact_url(f'{self.config.base_url}/{path}')}"
        self._holdoff.wait(self._server, self._sleep)  # another process may have been told
        if self.config.max_requests_per_second:
            self._holdoff.pace(self._server, self.config.max_requests_per_second, self._sleep)
        try:
            response = client.request(
                method,
                path,
                params=dict(params) if params else None,
                content=json.dumps(body).encode() if body is not None else None,
                headers=sent_headers,
            )
        except httpx.TransportError as exc:
            if _certificate_problem(exc):
                raise PermanentError(
                    f"{where}: the server's TLS certificate was refused ({exc}); check ca_file, "
                    "and that the certificate names the host in base_url"
                ) from exc
            raise TransientError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        log.debug(
            "http request",
            connector=self.name,
            method=method,
            url=redact_url(response.request.url),
            headers=redact_headers(response.request.headers),
            status=response.status_code,
        )
        if method not in SAFE_METHODS:
            log.info(
                "http write",
                connector=self.name,
                method=method,
                path=path,
                status=response.status_code,
                conditional="If-Match" in sent_headers,
            )
        if response.is_success:
            return response
        raise self.error_for(response, where)

    def error_for(self, response: httpx.Response, where: str) -> ConnectorError:
        status = response.status_code
        vendor = self.vendor_error(response)
        text = f"{where}: HTTP {status}" + (f" {vendor.code}" if vendor.code else "")
        text += f": {vendor.detail}" if vendor.detail else ""
        if status == 429 or (status >= 500 and status != 501):
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            if delay is not None:
                self._holdoff.note(self._server, delay)
            suffix = f"; the server asks to retry after {delay:.0f} s" if delay is not None else ""
            return TransientError(text + suffix, delay)
        if status in (401, 403):
            return PermanentError(
                f"{self.name}: {self.config.base_url} refused the request "
                f"(HTTP {status}: {vendor.detail}); {self.credentials_hint}"
            )
        if status == 404:
            return NotFound(text, status, vendor.code)
        if status == 412:
            return PreconditionFailed(text, status, vendor.code)
        if 300 <= status < 400:
            return PermanentError(
                f"{text}: redirected to {response.headers.get('Location', '?')}; "
                "set base_url to the API root the server answers on"
            )
        return HttpError(text, status, vendor.code)
