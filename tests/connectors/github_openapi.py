"""GitHub's own OpenAPI description as a test oracle: every request the GitHub connector
sends and every answer the sandbox gives are validated with openapi-core.

The description comes from the npm package `@octokit/openapi` (`scripts/fetch-github-openapi`
puts `generated/api.github.com.json` and `generated/ghec.json` in `.bootstrap/openapi/`).
It is 13 MB with 800+ paths; building openapi-core's validator over all of it costs far
more than the tests that use it, so it is pruned to the operations the connector and the
sandbox use, each with everything its `$ref`s reach (so the references stay resolvable),
and built once per test session. The SAML credential-authorization operations exist only
on GitHub Enterprise Cloud, so they (and only they) are taken from `ghec.json`.

GitHub answers some statuses on any endpoint without listing them per operation (its
"Troubleshooting" and "Rate limits" pages): 401 bad credentials, 403 forbidden or rate
limited, 404 not found, 422, 429. An answer with such a status that the operation does not
list is validated against the description's `basic-error` schema instead; any other status
an operation does not list fails.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = ROOT / ".bootstrap" / "openapi"
HOST = "https://api.github.com"
GENERIC_STATUSES = frozenset({401, 403, 404, 422, 429})

# (path, method, which description)
OPERATIONS: tuple[tuple[str, str, str], ...] = (
    ("/app/installations/{installation_id}/access_tokens", "post", "api"),
    ("/users/{username}", "get", "api"),
    ("/orgs/{org}", "get", "api"),
    ("/orgs/{org}/memberships/{username}", "get", "api"),
    ("/orgs/{org}/memberships/{username}", "delete", "api"),
    ("/orgs/{org}/teams", "get", "api"),
    ("/orgs/{org}/teams/{team_slug}/memberships/{username}", "get", "api"),
    ("/orgs/{org}/teams/{team_slug}/memberships/{username}", "delete", "api"),
    ("/orgs/{org}/outside_collaborators", "get", "api"),
    ("/orgs/{org}/repos", "get", "api"),
    ("/repos/{owner}/{repo}/collaborators", "get", "api"),
    ("/repos/{owner}/{repo}/collaborators/{username}", "get", "api"),
    ("/repos/{owner}/{repo}/collaborators/{username}", "delete", "api"),
    ("/repos/{owner}/{repo}/invitations", "get", "api"),
    ("/repos/{owner}/{repo}/invitations/{invitation_id}", "delete", "api"),
    ("/orgs/{org}/credential-authorizations", "get", "ghec"),
    ("/orgs/{org}/credential-authorizations/{credential_id}", "delete", "ghec"),
)


class OpenAPIMismatch(AssertionError):
    """A request or answer that GitHub's OpenAPI description does not allow."""


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _lookup(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def prune(sources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A description with only OPERATIONS and the components their `$ref`s reach."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, dict[str, Any]] = {}
    for path, method, source in OPERATIONS:
        spec = sources[source]
        operation = spec["paths"][path][method]
        paths.setdefault(path, {})[method] = operation
        pending, seen = _refs(operation), set()
        while pending:
            ref = pending.pop()
            if ref in seen:
                continue
            seen.add(ref)
            _, _, section, name = ref.split("/", 3)
            target = _lookup(spec, ref)
            components.setdefault(section, {}).setdefault(name, target)
            pending |= _refs(target)
    api = sources["api"]
    return {
        "openapi": api["openapi"],
        "info": api["info"],
        "servers": [{"url": HOST}],
        "paths": paths,
        "components": components,
    }


@dataclass(frozen=True)
class Oracle:
    openapi: OpenAPI
    spec: dict[str, Any]
    load_seconds: float
    build_seconds: float
    patterns: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        for pattern, template in self.patterns:
            if pattern.match(path):
                return self.spec["paths"][template].get(method.lower())
        return None


@cache
def oracle() -> Oracle:
    """Load both descriptions, prune, build the validator: once per test session."""
    missing = [n for n in ("api.github.com.json", "ghec.json") if not (SPEC_DIR / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} not in {SPEC_DIR}: run scripts/fetch-github-openapi"
        )
    started = time.perf_counter()
    sources = {
        "api": json.loads((SPEC_DIR / "api.github.com.json").read_bytes()),
        "ghec": json.loads((SPEC_DIR / "ghec.json").read_bytes()),
    }
    loaded = time.perf_counter()
    spec = prune(sources)
    openapi = OpenAPI.from_dict(spec)
    built = time.perf_counter()
    patterns = [
        (re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$"), path)
        for path in sorted(spec["paths"], key=lambda p: p.count("{"))
    ]
    return Oracle(openapi, spec, loaded - started, built - loaded, patterns)


@dataclass
class _Request:
    """An httpx request as openapi-core reads it (its `Request` protocol)."""

    source: httpx.Request
    parameters: RequestParameters

    host_url = HOST

    @classmethod
    def of(cls, request: httpx.Request) -> _Request:
        return cls(
            request,
            RequestParameters(
                query=ImmutableMultiDict(list(request.url.params.multi_items())),
                header=Headers(list(request.headers.items())),
            ),
        )

    @property
    def path(self) -> str:
        return self.source.url.path

    @property
    def method(self) -> str:
        return self.source.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.source.content or None

    @property
    def content_type(self) -> str:
        return self.source.headers.get("content-type", "").lower()


@dataclass
class _Response:
    source: httpx.Response

    @property
    def status_code(self) -> int:
        return self.source.status_code

    @property
    def content_type(self) -> str:
        return self.source.headers.get("content-type", "").lower()

    @property
    def headers(self) -> Headers:
        return Headers(list(self.source.headers.items()))

    @property
    def data(self) -> bytes | None:
        return self.source.content or None


def check_request(request: httpx.Request) -> None:
    """Raise OpenAPIMismatch when GitHub's description has no such operation or the
    request's parameters or body do not fit it."""
    try:
        oracle().openapi.validate_request(_Request.of(request))
    except Exception as exc:
        raise OpenAPIMismatch(f"{request.method} {request.url.path}: {exc!r}") from exc


def check_response(request: httpx.Request, response: httpx.Response) -> None:
    """Raise OpenAPIMismatch when the answer does not fit the operation's responses."""
    spec = oracle()
    operation = spec.operation(request.method, request.url.path)
    listed = operation is not None and (
        str(response.status_code) in operation["responses"] or "default" in operation["responses"]
    )
    where = f"{request.method} {request.url.path} -> {response.status_code}"
    if not listed and response.status_code in GENERIC_STATUSES:
        errors = list(_basic_error(spec.spec).iter_errors(response.json()))
        if errors:
            raise OpenAPIMismatch(f"{where}: not a GitHub error body: {errors[0].message}")
        return
    try:
        spec.openapi.validate_response(_Request.of(request), _Response(response))
    except Exception as exc:
        raise OpenAPIMismatch(f"{where}: {exc!r}") from exc


@cache
def _basic_error_for(spec_id: int) -> OAS30Validator:
    spec = oracle().spec
    return OAS30Validator({"$ref": "#/components/schemas/basic-error", **spec})


def _basic_error(spec: dict[str, Any]) -> OAS30Validator:
    return _basic_error_for(id(spec))


class ValidatingTransport(httpx.BaseTransport):
    """Wraps a transport: the request is checked before it is sent, the answer after.

    A mismatch raises (an AssertionError, which the connector does not map into its own
    errors, so the test fails there) and is also kept in `mismatches`, so a test can
    assert none was swallowed."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.mismatches: list[str] = []
        self.checked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        try:
            check_request(request)
            response = self.inner.handle_request(request)
            response.read()
            check_response(request, response)
        except OpenAPIMismatch as exc:
            self.mismatches.append(str(exc))
            raise
        self.checked += 1
        return response

    def close(self) -> None:
        """Kept open: each connector session closes its transport, and the next reuses it."""
