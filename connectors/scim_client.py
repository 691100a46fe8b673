"""Configuration, HTTP sessions and how SCIM error responses read.

Every request goes through the shared HTTP choke point (`connectors.http.HttpClient`):
dry run, `Retry-After`, error mapping and redaction live there. This module adds the SCIM
parts: the Bearer token, `application/scim+json`, and the SCIM error body (`detail`,
`scimType`, RFC 7644 §3.12), whose `scimType` becomes the error's `code`.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import quote

import httpx
import structlog
from pydantic import SecretStr, field_validator

from connectors.base import DELETE, DISABLE, PermanentError
from connectors.http import HttpClient, HttpConfig, NotFound, VendorError

log = structlog.get_logger(__name__)

SCIM_JSON = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
PAGE_SIZE = 100
MAX_PAGES = 1000  # a server that ignores startIndex must not keep us paging forever


class ScimConfig(HttpConfig):
    """One SCIM 2.0 service provider: where it is, the token, and how leavers are matched."""

    name: str = "scim"
    """What the service calls this system."""
    kind: Literal["scim"] = "scim"
    token: SecretStr
    """Sent as "Authorization: Bearer ..." (or token_env / token_file)."""
    match_attribute: Literal["userName", "externalId"] = "userName"
    """The user attribute the leaver is matched on."""
    match_value: Literal["email", "employee_id"] = "email"
    """Which of the leaver's values it is compared with."""
    on_leave: Literal["disable", "delete"] = "disable"
    """What happens to the user: disable (active=false) or delete. The policy's on_leave
    for this connector wins; "deactivate" is read as disable."""

    @field_validator("on_leave", mode="before")
    @classmethod
    def _deactivate_is_disable(cls, value: object) -> object:
        return DISABLE if value == "deactivate" else value


def filter_string(value: str) -> str:
    """A SCIM filter string literal (RFC 7644 §3.4.2.2): a JSON string, `"` and `\\` escaped."""
    return json.dumps(value, ensure_ascii=False)


def member_filter(user_id: str) -> str:
    """The SCIM filter for the group members that are this user."""
    return f"members[value eq {filter_string(user_id)}]"


def resource_path(endpoint: str, resource_id: str) -> str:
    return f"{endpoint}/{quote(resource_id, safe='')}"


def etag_of(response: httpx.Response, resource: dict[str, Any]) -> str | None:
    """The resource's version: the ETag header, else meta.version (RFC 7644 §3.14)."""
    meta = resource.get("meta")
    version = meta.get("version") if isinstance(meta, dict) else None
    return response.headers.get("ETag") or (version if isinstance(version, str) else None)


class ScimClient(HttpClient):
    """The shared HTTP base, speaking SCIM."""

    config: ScimConfig
    content_type = SCIM_JSON
    credentials_hint = "check the token and the rights it carries"

    def __init__(
        self,
        config: ScimConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(config, transport=transport, dry_run=dry_run)

    @property
    def deletes(self) -> bool:
        return self.config.on_leave == DELETE

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}

    def default_headers(self) -> dict[str, str]:
        return {"Accept": f"{SCIM_JSON}, application/json"}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        """The `detail` and `scimType` of a SCIM error body, or the start of what came back."""
        try:
            body = response.json()
        except ValueError:
            return VendorError(response.text[:200].strip())
        if not isinstance(body, dict):
            return VendorError(str(body)[:200])
        detail, scim_type = body.get("detail"), body.get("scimType")
        return VendorError(
            str(detail) if detail else response.reason_phrase,
            str(scim_type) if scim_type else None,
        )

    def write(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        if_match: str | None,
    ) -> httpx.Response:
        """A conditional write when the resource has an ETag (RFC 7644 §3.14)."""
        headers = {"If-Match": if_match} if if_match else None
        return self._request(client, method, path, body=body, headers=headers)

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
        except NotFound:
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
            except NotFound as exc:
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
