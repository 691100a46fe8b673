"""Microsoft Graph over the shared HTTP choke point: tokens, Graph's errors, `$batch`, paging.

Every Graph request goes through `connectors.http.HttpClient._request` (dry run, Retry-After
within `retry_budget_seconds`, redaction). This module adds what is Graph's own:

- the app-only token from `entra_auth.TokenSource`, per request; a 401
  `InvalidAuthenticationToken` (expired or revoked token) gets one new token and one retry;
- Graph's error body `{"error": {"code", "message", "innerError"}}`; a 403 names the
  application permission to grant for that call (`PERMISSIONS`);
- JSON batching (`POST /$batch`, at most 20 requests): each item's own status; items
  answered 429 are sent again, alone, only after the largest Retry-After among them, and
  only while the total wait stays within the budget; a dry run reads item by item with GET,
  since `$batch` is a POST the choke point refuses;
- `@odata.nextLink` paging.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog
from pydantic import SecretStr, field_validator, model_validator

from connectors.base import ConnectorError, PermanentError, TransientError
from connectors.entra_auth import HttpxForMsal, TokenSource, credential_of
from connectors.http import HttpClient, HttpConfig, HttpError, VendorError, retry_after_seconds

log = structlog.get_logger(__name__)

BATCH_LIMIT = 20
MAX_PAGES = 500
# what each call needs: the least privileged application permission (Graph's docs)
PERMISSIONS = {
    "find_user": "User.Read.All",
    "disable": "User.EnableDisableAccount.All (with User.Read.All) or User.ReadWrite.All",
    "revoke_sessions": "User.RevokeSessions.All",
    "member_of": "GroupMember.Read.All",
    "remove_member": "GroupMember.ReadWrite.All",
    "app_roles": "Directory.Read.All (or AppRoleAssignment.ReadWrite.All)",
    "remove_app_role": "AppRoleAssignment.ReadWrite.All",
    "methods": "UserAuthenticationMethod.Read.All",
    "delete_method": "UserAuthenticationMethod.ReadWrite.All",
    "devices": "Device.Read.All",
    "licences": "User.Read.All",
    "assign_licence": "LicenseAssignment.ReadWrite.All",
    "batch": "the permission of each request in the batch",
}


class EntraConfig(HttpConfig):
    """One Microsoft Entra tenant, reached as an app registration (client credentials)."""

    name: str = "entra"
    """What the service calls this system."""
    kind: Literal["entra"] = "entra"
    base_url: str = "https://graph.microsoft.com/v1.0"
    """The Microsoft Graph root, version included."""
    authority_host: str = "https://login.microsoftonline.com"
    """The Microsoft identity platform host (another one only for a national cloud or the
    demo sandbox); https only."""
    tenant_id: str
    """The directory (tenant) id or a verified domain of the tenant."""
    client_id: str
    """The application (client) id of the app registration."""
    client_secret: SecretStr | None = None
    """A client secret's value (or client_secret_env / client_secret_file)."""
    certificate_key: SecretStr | None = None
    """The certificate's private key, PEM (or certificate_key_env / certificate_key_file)."""
    certificate_thumbprint: str | None = None
    """The certificate's SHA-1 thumbprint (hex), as the app registration shows it."""
    certificate_file: Path | None = None
    """Instead of certificate_key and certificate_thumbprint: one PEM file holding the
    private key and the certificate."""
    match_attribute: Literal["userPrincipalName", "mail", "employeeId"] = "userPrincipalName"
    """The user attribute the leaver is found by."""
    match_value: Literal["email", "employee_id"] = "email"
    """Which of the leaver's values it is compared with."""
    sessions_window_hours: float = 24
    """Sessions count as revoked when revokeSignInSessions ran this recently on a disabled
    (or AD-managed) account; older, they are revoked again."""

    @field_validator("authority_host")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme != "https" or not url.host or url.path not in ("", "/"):
            raise ValueError(f"authority_host {value!r} must be https://host (MSAL needs https)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> EntraConfig:
        given = [
            n
            for n in ("client_secret", "certificate_key", "certificate_file")
            if getattr(self, n) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of client_secret, certificate_key (with "
                f"certificate_thumbprint) or certificate_file; got {given or 'none'}"
            )
        if self.certificate_key is not None and not self.certificate_thumbprint:
            raise ValueError("certificate_key needs certificate_thumbprint")
        if self.certificate_file is not None and not self.certificate_file.is_file():
            raise ValueError(f"certificate_file {str(self.certificate_file)!r} is not a file")
        return self

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    def msal_credential(self) -> dict[str, str] | str:
        if self.certificate_file is not None:
            text = self.certificate_file.read_text(encoding="utf-8")
            key, cert = _pem_blocks(text, "PRIVATE KEY"), _pem_blocks(text, "CERTIFICATE")
            if not key or not cert:
                raise PermanentError(
                    f"{self.name}: certificate_file {self.certificate_file} "
                    "must hold the PEM private key and the PEM certificate"
                )
            return credential_of(secret=None, private_key=key, thumbprint=None, certificate=cert)
        return credential_of(
            secret=self.client_secret.get_secret_value() if self.client_secret else None,
            private_key=self.certificate_key.get_secret_value() if self.certificate_key else None,
            thumbprint=self.certificate_thumbprint,
            certificate=None,
        )


def _pem_blocks(text: str, label: str) -> str:
    lines, keep, found = [], False, []
    for line in text.splitlines():
        if line.startswith("-----BEGIN") and label in line:
            keep = True
        if keep:
            lines.append(line)
        if line.startswith("-----END") and label in line and keep:
            found.append("\n".join(lines) + "\n")
            lines, keep = [], False
    return "".join(found)


class GraphRefused(PermanentError):
    """A 401 or 403 from Graph, with Graph's code."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class PermissionMissing(PermanentError):
    """Graph answered 403: the app lacks an application permission (named in the message)."""


@dataclass(frozen=True)
class BatchItem:
    id: str
    method: str
    url: str  # relative to the Graph root, e.g. "users/{id}/memberOf?$select=id"
    operation: str  # key of PERMISSIONS
    body: Any = None


@dataclass(frozen=True)
class BatchResult:
    status: int
    body: Any
    code: str | None = None
    message: str = ""


class GraphClient(HttpClient):
    """The shared HTTP base, speaking Microsoft Graph as an app."""

    config: EntraConfig
    credentials_hint = "check tenant_id, client_id and the app's Graph application permissions"

    def __init__(
        self,
        config: EntraConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
        msal_transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(config, transport=transport, dry_run=dry_run, sleep=sleep)
        cafile = str(config.ca_file) if config.ca_file else None
        msal_http = HttpxForMsal(
            httpx.Client(
                transport=msal_transport or transport,
                verify=ssl.create_default_context(cafile=cafile) if config.verify else False,
                timeout=config.timeout_seconds,
                follow_redirects=False,
            )
        )
        self.tokens = TokenSource(
            name=config.name,
            authority=config.authority,
            client_id=config.client_id,
            credential=config.msal_credential(),
            http_client=msal_http,
            shared_key="" if transport is None and msal_transport is None else str(id(msal_http)),
        )

    def vendor_error(self, response: httpx.Response) -> VendorError:
        try:
            body = response.json()
        except ValueError:
            return VendorError(response.text[:200].strip() or response.reason_phrase)
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            return VendorError(str(inner.get("message") or ""), str(inner.get("code") or ""))
        return VendorError(str(body)[:200])

    def error_for(self, response: httpx.Response, where: str) -> ConnectorError:
        if response.status_code in (401, 403):
            vendor = self.vendor_error(response)
            return GraphRefused(
                f"{where}: HTTP {response.status_code} {vendor.code}: {vendor.detail}",
                response.status_code,
                vendor.code,
            )
        return super().error_for(response, where)

    # -- one call -------------------------------------------------------------------

    def call(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        operation: str,
        params: dict[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One Graph request with the app's token; a refused token is renewed once."""
        token = self.tokens.token()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {token}"}
            try:
                return self._request(
                    client, method, path, params=params, body=body, headers=headers
                )
            except GraphRefused as exc:
                if exc.status == 401 and attempt == 1:
                    token = self.tokens.fresh(token)
                    continue
                raise self.refusal(exc.status, exc.code, str(exc), operation) from None
        raise AssertionError("unreachable")

    def refusal(self, status: int, code: str | None, text: str, operation: str) -> PermanentError:
        if status == 403:
            return PermissionMissing(
                f"{self.name}: Graph refused {operation.replace('_', ' ')} ({code or 'HTTP 403'})"
                f": the app {self.config.client_id} lacks the application permission "
                f"{PERMISSIONS.get(operation, '?')}; grant it (API permissions > Microsoft "
                "Graph > Application permissions) and give admin consent"
            )
        return PermanentError(f"{text}; {self.credentials_hint}")

    def get_json(
        self, client: httpx.Client, path: str, operation: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = self.call(client, "GET", path, operation=operation, params=params).json()
        if not isinstance(body, dict):
            raise PermanentError(
                f"{self.name}: GET {path} did not answer with a JSON object; "
                "check base_url (e.g. https://graph.microsoft.com/v1.0)"
            )
        return body

    def collect(
        self, client: httpx.Client, first: dict[str, Any], operation: str
    ) -> list[dict[str, Any]]:
        """The `value` of a collection page and of every page after it."""
        rows = [r for r in first.get("value") or [] if isinstance(r, dict)]
        link = first.get("@odata.nextLink")
        for _ in range(MAX_PAGES):
            if not link:
                return rows
            page = self.get_json(client, self.relative(str(link)), operation)
            rows += [r for r in page.get("value") or [] if isinstance(r, dict)]
            link = page.get("@odata.nextLink")
        raise PermanentError(f"{self.name}: {operation} did not end after {MAX_PAGES} pages")

    def relative(self, link: str) -> str:
        """A nextLink as a path under base_url (Graph gives absolute links)."""
        version = httpx.URL(self.config.base_url).path.rstrip("/")
        path = httpx.URL(link).raw_path.decode()
        return path.split(version + "/", 1)[-1] if version else path.lstrip("/")

    # -- $batch ---------------------------------------------------------------------

    def batch(self, client: httpx.Client, items: Iterable[BatchItem]) -> dict[str, BatchResult]:
        """Each item's final result by id; 429 items are retried after their Retry-After."""
        pending = list(items)
        results: dict[str, BatchResult] = {}
        if self.dry_run and all(i.method == "GET" for i in pending):
            for item in pending:
                results[item.id] = self._one(client, item)
            return results
        waited = 0.0
        while pending:
            # Nothing more is sent once an item was throttled: the chunks not sent yet wait
            # for the Retry-After deadline too, with the throttled items.
            throttled: list[tuple[BatchItem, float]] = []
            unsent: list[BatchItem] = []
            for start in range(0, len(pending), BATCH_LIMIT):
                if throttled:
                    unsent = pending[start:]
                    break
                chunk = pending[start : start + BATCH_LIMIT]
                for item, result, delay in self._send_batch(client, chunk):
                    if result.status == 429:
                        throttled.append((item, delay))
                    else:
                        results[item.id] = result
            if not throttled:
                break
            wait = max(delay for _, delay in throttled)
            if waited + wait > self.config.retry_budget_seconds:
                raise TransientError(
                    f"{self.name}: Graph throttled {len(throttled)} batched request(s) and asks "
                    f"to wait {wait:.0f} s, past retry_budget_seconds",
                    wait,
                )
            log.info(
                "graph batch retry after", connector=self.name, seconds=wait, items=len(throttled)
            )
            self._sleep(wait)
            waited += wait
            pending = [item for item, _ in throttled] + unsent
        return results

    def _send_batch(
        self, client: httpx.Client, chunk: list[BatchItem]
    ) -> list[tuple[BatchItem, BatchResult, float]]:
        requests = [
            {
                "id": i.id,
                "method": i.method,
                "url": "/" + i.url.lstrip("/"),
                **(
                    {"body": i.body, "headers": {"Content-Type": "application/json"}}
                    if i.body is not None
                    else {}
                ),
            }
            for i in chunk
        ]
        body = self.call(
            client, "POST", "$batch", operation="batch", body={"requests": requests}
        ).json()
        answers = {str(r.get("id")): r for r in body.get("responses") or []}
        out = []
        for item in chunk:
            answer = answers.get(item.id)
            if answer is None:
                raise PermanentError(f"{self.name}: $batch gave no answer for {item.url}")
            status = int(answer.get("status") or 0)
            headers = {k.lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
            delay = retry_after_seconds(headers.get("retry-after"))
            inner = (
                (answer.get("body") or {}).get("error")
                if isinstance(answer.get("body"), dict)
                else None
            )
            code = str(inner.get("code")) if isinstance(inner, dict) else None
            message = str(inner.get("message")) if isinstance(inner, dict) else ""
            if status == 429 and delay is None:
                delay = 1.0  # Graph always sends Retry-After; wait a second if it did not
            out.append((item, BatchResult(status, answer.get("body"), code, message), delay or 0))
        return out

    def _one(self, client: httpx.Client, item: BatchItem) -> BatchResult:
        path, _, query = item.url.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        try:
            response = self.call(
                client,
                item.method,
                path,
                operation=item.operation,
                params=params or None,
                body=item.body,
            )
        except HttpError as exc:
            return BatchResult(exc.status, None, exc.code, str(exc))
        return BatchResult(response.status_code, response.json() if response.content else None)

    def check_item(self, item: BatchItem, result: BatchResult) -> None:
        """Raise the matching error for a failed batch item (403 names the permission)."""
        if result.status < 300:
            return
        text = (
            f"{self.name}: {item.method} {item.url}: HTTP {result.status} {result.code}: "
            f"{result.message}"
        )
        if result.status in (401, 403):
            raise self.refusal(result.status, result.code, text, item.operation)
        if result.status == 429 or result.status >= 500:
            raise TransientError(text)
        raise PermanentError(text)
