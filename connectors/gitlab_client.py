"""Configuration, HTTP sessions, pagination and rate limits for GitLab's REST API v4.

Every request goes through the shared choke point (`connectors.http.HttpClient`): dry run,
`Retry-After` on 429/503, error mapping and redaction live there. This module adds GitLab's
parts (docs.gitlab.com/ee/api/rest/):

- the token in `PRIVATE-TOKEN` (a personal, group or service-account access token);
- error bodies `{"message": ...}` and, for a token without the scope an endpoint needs,
  `{"error": "insufficient_scope", "error_description": ..., "scope": "api"}`: the code
  becomes the error's `code`, and 401/403 become `Forbidden` that keeps the status;
- a 429 without `Retry-After` waits until `RateLimit-Reset` (epoch seconds); a success
  that says `RateLimit-Remaining: 0` holds the next request until `RateLimit-Reset`, both
  within the retry budget;
- lists: `per_page=100`, following `X-Next-Page` (offset pagination) or the `Link`
  header's `rel="next"` (keyset pagination, where GitLab sends no X-Next-Page).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from pydantic import Field, SecretStr

from connectors.base import ConnectorError, PermanentError
from connectors.http import SAFE_METHODS, HttpClient, HttpConfig, HttpError, VendorError

PER_PAGE = 100
MAX_PAGES = 1000  # a server that keeps answering "next" must not keep us paging forever


class GitLabConfig(HttpConfig):
    """One GitLab instance (self-managed or gitlab.com) and how leavers are found in it."""

    name: str = "gitlab"
    """What the service calls this system."""
    kind: Literal["gitlab"] = "gitlab"
    base_url: str = "https://gitlab.com/api/v4"
    """The API root, e.g. https://gitlab.example.com/api/v4."""
    token: SecretStr
    """Sent as PRIVATE-TOKEN (or token_env / token_file): scope api (read_api only lists)."""
    admin: bool = True
    """The token belongs to an administrator: memberships anywhere (/users/:id/memberships),
    personal access tokens, SSH keys and blocking the user. false for a group owner's token
    (gitlab.com): only memberships under `groups`; the account is left to a person."""
    groups: list[str] = Field(default_factory=list)
    """Top-level groups (ids or full paths) to walk. Required without admin; with admin,
    limits memberships to these groups (empty: every group and project)."""
    usernames: dict[str, str] = Field(default_factory=dict)
    """Mapping table: employee id -> GitLab username; wins over the email lookup."""
    match_email: bool = True
    """Look the leaver up by email when the table has no entry (private emails are matched
    only with an admin token; otherwise the user's public email)."""
    require_mapping: bool = False
    """Every employee is expected to have a GitLab user: a missing or ambiguous match becomes
    a MANUAL step ("manual: not mapped") instead of "no access here" or an error."""


class Forbidden(HttpError):
    """401/403: the token, its scope or its rights do not allow this."""


class GitLabClient(HttpClient):
    """The shared HTTP base, speaking GitLab."""

    config: GitLabConfig
    credentials_hint = (
        "check the token (scope api; read_api can only list) and that its user is an "
        "administrator, or Owner of the groups, as the admin setting says"
    )

    def __init__(
        self,
        config: GitLabConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
    ) -> None:
        super().__init__(config, transport=transport, dry_run=dry_run)
        self._not_before = 0.0  # time.time() before which no request is sent (RateLimit-Reset)

    def auth_headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self.config.token.get_secret_value()}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        try:
            body = response.json()
        except ValueError:
            return VendorError(response.text[:200].strip() or response.reason_phrase)
        if not isinstance(body, dict):
            return VendorError(str(body)[:200])
        if body.get("error"):
            detail = body.get("error_description") or body["error"]
            needs = f" (needs scope {body['scope']})" if body.get("scope") else ""
            return VendorError(f"{detail}{needs}", str(body["error"]))
        text = body.get("message")
        if isinstance(text, dict | list):  # validation errors: {"message": {"field": [..]}}
            text = str(text)
        return VendorError(str(text) if text else response.reason_phrase)

    def error_for(self, response: httpx.Response, where: str) -> ConnectorError:
        status = response.status_code
        if status == 429 and "Retry-After" not in response.headers:
            reset = response.headers.get("RateLimit-Reset", "")
            if reset.isdigit():
                response.headers["Retry-After"] = str(max(0, int(reset) - int(time.time())))
        if status in (401, 403):
            vendor = self.vendor_error(response)
            hint = (
                "give the token the api scope"
                if vendor.code == "insufficient_scope"
                else self.credentials_hint
            )
            return Forbidden(
                f"{self.name}: {where.split(': ', 1)[-1]} refused (HTTP {status}: "
                f"{vendor.detail}); {hint}",
                status,
                vendor.code,
            )
        return super().error_for(response, where)

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
        wait = self._not_before - time.time()
        sent = method in SAFE_METHODS or not self.dry_run  # a dry-run write sends nothing
        if wait > 0 and sent:
            self._sleep(min(wait, self.config.retry_budget_seconds))
        response = super()._request(client, method, path, params=params, body=body, headers=headers)
        remaining, reset = (
            response.headers.get(h, "") for h in ("RateLimit-Remaining", "RateLimit-Reset")
        )
        if remaining == "0" and reset.isdigit():
            self._not_before = float(reset)
        return response

    # -- reading ---------------------------------------------------------------------

    def get_json(
        self, client: httpx.Client, path: str, params: Mapping[str, str] | None = None
    ) -> Any:
        response = self._request(client, "GET", path, params=params)
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentError(
                f"{self.name}: GET {self.config.base_url}/{path} did not answer JSON; check "
                "that base_url is the API root (e.g. https://gitlab.example.com/api/v4)"
            ) from exc

    def get_object(
        self, client: httpx.Client, path: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        body = self.get_json(client, path, params)
        if not isinstance(body, dict):
            raise PermanentError(f"{self.name}: GET {path} did not answer a JSON object")
        return body

    def list_all(
        self, client: httpx.Client, path: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a list, following X-Next-Page or the Link header."""
        query = {**(params or {}), "per_page": str(PER_PAGE)}
        found: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            response = self._request(client, "GET", path, params=query)
            page = response.json()
            if not isinstance(page, list):
                raise PermanentError(f"{self.name}: GET {path} did not answer a JSON list")
            found.extend(item for item in page if isinstance(item, dict))
            next_page = response.headers.get("X-Next-Page", "").strip()
            link = response.links.get("next", {}).get("url")
            if next_page:
                query = {**query, "page": next_page}
            elif link:
                path, query = self._relative(link)
            else:
                return found
        raise PermanentError(f"{self.name}: GET {path} did not end after {MAX_PAGES} pages")

    def _relative(self, link: str) -> tuple[str, dict[str, str]]:
        """A Link URL as a path under base_url and its query; refuses another host."""
        url, base = urlsplit(link), urlsplit(self.config.base_url)
        if (url.scheme, url.netloc) != (base.scheme, base.netloc) or not url.path.startswith(
            base.path + "/"
        ):
            raise PermanentError(
                f"{self.name}: the next page is on {url.scheme}://{url.netloc}{url.path}, "
                f"outside {self.config.base_url}; set base_url to the URL GitLab answers on"
            )
        return url.path.removeprefix(base.path + "/"), dict(parse_qsl(url.query))


def segment(value: str | int) -> str:
    """One path segment: a numeric id, or a full path URL-encoded ("a/b" -> "a%2Fb")."""
    return quote(str(value), safe="")
