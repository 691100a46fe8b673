"""Configuration, credentials, rate limits and paging for GitHub's REST API.

Every request goes through the shared choke point (`connectors.http.HttpClient`): dry run,
Retry-After with a bounded budget, error mapping, redaction. This module adds GitHub's
parts (docs.github.com/rest, API version 2022-11-28):

- headers `Accept: application/vnd.github+json` and `X-GitHub-Api-Version: 2022-11-28`;
- a fine-grained token, or a GitHub App installation token (see `connectors.github_app`);
  exchanging the App's JWT for that token is allowed in a dry run: it changes nothing;
- the error body `{"message", "documentation_url", "errors"}`;
- rate limits ("Rate limits for the REST API"): a 403 or 429 with `Retry-After` (the
  secondary limit) waits that long; with `x-ratelimit-remaining: 0` (the primary limit)
  until `x-ratelimit-reset`; a secondary limit without either waits a minute. A 200 that
  says `x-ratelimit-remaining: 0` makes the next request wait for the reset before it is
  sent. Waits fit the retry budget or become a `TransientError` with `retry_after`;
- lists paged with `per_page=100` and the `Link` header's `rel="next"`, only ever on the
  configured host (a Link elsewhere would carry the token there).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
import structlog
from pydantic import Field, SecretStr, model_validator

from connectors.base import ConnectorError, PermanentError, TransientError
from connectors.github_app import InstallationToken
from connectors.http import HttpClient, HttpConfig, VendorError

log = structlog.get_logger(__name__)

API_VERSION = "2022-11-28"
PAGE_SIZE = 100
MAX_PAGES = 500
SECONDARY_DEFAULT_WAIT = 60.0  # GitHub: "wait for at least one minute before retrying"
RESET_MARGIN = 0.25  # x-ratelimit-reset is whole seconds; clocks differ a little
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


class GitHubConfig(HttpConfig):
    """One GitHub organisation: where the API is, how to authenticate, who is who."""

    name: str = "github"
    """What the service calls this system."""
    kind: Literal["github"] = "github"
    base_url: str = "https://api.github.com"
    """The REST API root: https://api.github.com, or https://HOST/api/v3 for GitHub Enterprise
    Server."""
    organization: str = Field(min_length=1)
    """The organisation's login, e.g. acme-nl."""
    token: SecretStr | None = None
    """A fine-grained personal access token (or token_env / token_file); or use the App
    settings below instead."""
    app_id: str | None = None
    """GitHub App id (with private_key and installation_id instead of token)."""
    private_key: SecretStr | None = None
    """The GitHub App's private key, PEM (or private_key_env / private_key_file)."""
    installation_id: int | None = None
    """The App's installation id on the organisation."""
    logins: dict[str, str] = {}
    """Employee id -> GitHub login, e.g. {"E1042" = "jdevries-acme"}."""
    login_from_email: bool = False
    """For an employee not in `logins`, try the local part of their email as the login."""
    require_mapping: bool = False
    """Every employee may hold access here: a leaver without a login is shown as a manual
    step instead of as having nothing."""
    saml_sso: bool = False
    """The organisation uses SAML single sign-on (GitHub Enterprise Cloud): list and revoke
    the leaver's SSO-authorised tokens and SSH keys."""
    repository_invitations: bool = True
    """Look for pending invitations to the organisation's repositories (one request per
    repository)."""

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> GitHubConfig:
        app = (self.app_id, self.private_key, self.installation_id)
        if self.token is not None and any(v is not None for v in app):
            raise ValueError("set token, or app_id + private_key + installation_id, not both")
        if self.token is None and not all(v is not None for v in app):
            raise ValueError(
                "set token (a fine-grained personal access token), or all of app_id, "
                "private_key and installation_id (a GitHub App installed on the organisation)"
            )
        owners: dict[str, str] = {}
        for employee, login in self.logins.items():
            if login.lower() in owners:
                raise ValueError(
                    f"logins maps both {owners[login.lower()]} and {employee} to {login!r}"
                )
            owners[login.lower()] = employee
        return self


def vendor_error_of(response: httpx.Response) -> VendorError:
    """GitHub's `message`, with the first validation error's field and code."""
    try:
        body = response.json()
    except ValueError:
        return VendorError(response.text[:200].strip() or response.reason_phrase)
    if not isinstance(body, dict):
        return VendorError(str(body)[:200])
    message = str(body.get("message") or response.reason_phrase)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        message += f" ({first.get('field', '?')}: {first.get('code', '?')})"
    return VendorError(message)


class GitHubClient(HttpClient):
    """The shared HTTP base, speaking GitHub's REST API."""

    config: GitHubConfig
    credentials_hint = (
        "check the token or GitHub App: it needs the organisation permission Members "
        "(read and write), and the repository permission Administration (read and write) on "
        "every repository; see docs/connectors/github.md"
    )

    def __init__(
        self,
        config: GitHubConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        dry_run: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(config, transport=transport, dry_run=dry_run, sleep=sleep)
        self._exhausted_until = 0.0  # time.time() before which the primary limit is spent
        self._installation: InstallationToken | None = None
        if config.app_id is not None and config.private_key is not None:
            self._installation = InstallationToken(
                config.app_id, config.private_key, _TokenExchange(self, transport).mint
            )

    def default_headers(self) -> dict[str, str]:
        return {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "offboarding-github-connector",
        }

    def auth_headers(self) -> dict[str, str]:
        if self._installation is not None:
            return {"Authorization": f"Bearer {self._installation.get()}"}
        assert self.config.token is not None  # the config's validator sees to it
        return {"Authorization": f"Bearer {self.config.token.get_secret_value()}"}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        return vendor_error_of(response)

    # -- rate limits ---------------------------------------------------------------------

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
        """Wait for a spent primary limit's reset (within the budget) before sending."""
        wait = self._exhausted_until - time.time()
        if wait > 0:
            if wait > self.config.retry_budget_seconds:
                raise TransientError(
                    f"{self.name}: the GitHub rate limit is spent until its reset in "
                    f"{wait:.0f} s; retry later",
                    wait,
                )
            log.info("github rate limit spent; waiting for the reset", seconds=round(wait, 2))
            self._sleep(wait)
        response = super()._send(client, method, path, params=params, body=body, headers=headers)
        self._note_limit(response)
        return response

    def _note_limit(self, response: httpx.Response) -> None:
        if response.headers.get("x-ratelimit-remaining") == "0":
            reset = _number(response.headers.get("x-ratelimit-reset"))
            if reset is not None:
                self._exhausted_until = reset + RESET_MARGIN

    def error_for(self, response: httpx.Response, where: str) -> ConnectorError:
        self._note_limit(response)
        if response.status_code in (403, 429):
            throttled = self._rate_limited(response, where)
            if throttled is not None:
                return throttled
        return super().error_for(response, where)

    def _rate_limited(self, response: httpx.Response, where: str) -> TransientError | None:
        message = vendor_error_of(response).detail
        retry_after = _number(response.headers.get("Retry-After"))
        spent = response.headers.get("x-ratelimit-remaining") == "0"
        if retry_after is None and spent:
            retry_after = max(0.0, self._exhausted_until - time.time())
            self._exhausted_until = 0.0  # the retry waits for it; no second wait
        if retry_after is None and "rate limit" in message.lower():
            retry_after = SECONDARY_DEFAULT_WAIT
        if retry_after is None:
            if response.status_code == 429:
                return TransientError(f"{where}: HTTP 429: {message}")
            return None
        return TransientError(
            f"{where}: HTTP {response.status_code}: {message}; GitHub asks to wait "
            f"{retry_after:.0f} s",
            retry_after,
        )

    # -- reading -------------------------------------------------------------------------

    def get_json(
        self, client: httpx.Client, path: str, params: Mapping[str, str] | None = None
    ) -> Any:
        response = self._request(client, "GET", path, params=params)
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentError(
                f"{self.name}: GET {self.config.base_url}/{path} did not answer JSON; check "
                "that base_url is the REST API root (https://api.github.com)"
            ) from exc

    def get_pages(
        self, client: httpx.Client, path: str, params: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a list, following `Link: <...>; rel="next"`."""
        items: list[dict[str, Any]] = []
        query: dict[str, str] = {"per_page": str(PAGE_SIZE), **(params or {})}
        for _ in range(MAX_PAGES):
            response = self._request(client, "GET", path, params=query)
            page = response.json()
            if not isinstance(page, list):
                raise PermanentError(f"{self.name}: GET {path} did not answer a list")
            items.extend(item for item in page if isinstance(item, dict))
            found = _NEXT.search(response.headers.get("Link", ""))
            if found is None:
                return items
            path, query = self._same_host(found.group(1))
        raise PermanentError(f"{self.name}: GET {path} did not end after {MAX_PAGES} pages")

    def _same_host(self, link: str) -> tuple[str, dict[str, str]]:
        url, root = httpx.URL(link), httpx.URL(self.config.base_url + "/")
        if (url.scheme, url.host, url.port) != (root.scheme, root.host, root.port):
            raise PermanentError(
                f"{self.name}: GitHub's Link header points to {url.host}, not to "
                f"{root.host}; refusing to send the token there"
            )
        path = url.path.removeprefix(root.path)
        return path, dict(url.params.multi_items())


class _TokenExchange(HttpClient):
    """Exchanges the App's JWT for an installation token through the same choke point
    (never refused as a dry-run write: minting a token changes nothing in GitHub)."""

    def __init__(self, owner: GitHubClient, transport: httpx.BaseTransport | None) -> None:
        super().__init__(owner.config, transport=transport, dry_run=False, sleep=owner._sleep)
        self._owner = owner
        self._jwt = ""

    def default_headers(self) -> dict[str, str]:
        return self._owner.default_headers()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._jwt}"}

    def vendor_error(self, response: httpx.Response) -> VendorError:
        return vendor_error_of(response)

    def mint(self, jwt: str) -> tuple[str, str]:
        self._jwt = jwt
        installation = self._owner.config.installation_id
        try:
            with self.session() as client:
                response = self._request(
                    client, "POST", f"app/installations/{installation}/access_tokens"
                )
        except PermanentError as exc:
            raise PermanentError(
                f"{self.name}: GitHub refused to mint an installation token for app "
                f"{self._owner.config.app_id}, installation {installation}: {exc}; check "
                "app_id, installation_id and that private_key belongs to the app"
            ) from exc
        finally:
            self._jwt = ""
        body = response.json()
        return str(body["token"]), str(body.get("expires_at", ""))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
