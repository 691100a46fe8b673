"""App-only tokens for Microsoft Graph: MSAL's confidential client, one per tenant and app.

The connector signs in as an app registration with the client-credentials grant, with a
client secret or a certificate (private key PEM plus its SHA-1 thumbprint, or a PEM file
with key and certificate), for the scope `https://graph.microsoft.com/.default`. One
`msal.ConfidentialClientApplication` is kept per (authority, app, credential) for the
life of the process, so its token cache is shared by every connector object built for it;
`acquire_token_for_client` answers from that cache and only asks the token endpoint again
near expiry. When Graph says a token is no longer valid, `fresh()` drops it from the cache
and asks for a new one.

MSAL talks HTTP through `HttpxForMsal`, an httpx client shaped the way MSAL's
`http_client=` expects (`get`/`post` returning `status_code`, `text`, `headers`,
`raise_for_status`): the same TLS settings (`ca_file`) and injectable transport as the
Graph calls. A token endpoint refusal becomes a `PermanentError` naming the AADSTS code
and what to check, never the secret or the assertion.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import Any

import httpx
import msal
import structlog

from connectors.base import PermanentError, TransientError

log = structlog.get_logger(__name__)

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
    }
)
# AADSTS code -> what the operator should do
_TOKEN_HINTS = {
    "7000215": "the client secret is wrong: use the secret's value, not its id, or create a "
    "new one under Certificates & secrets",
    "7000222": "the client secret has expired: create a new one under Certificates & secrets",
    "700016": "no app with this client_id in the tenant: check client_id and tenant_id",
    "90002": "the tenant does not exist: check tenant_id",
    "700027": "the certificate is not the one registered for the app: upload its public part "
    "under Certificates & secrets, and check the thumbprint",
    "700021": "the client assertion names another app: check client_id",
    "1002012": "the scope is refused",
}
_AADSTS = re.compile(r"AADSTS(\d+)")

_apps: dict[tuple[str, ...], msal.ConfidentialClientApplication] = {}
_apps_lock = threading.Lock()


class HttpxForMsal:
    """An httpx client with the interface MSAL's `http_client=` expects."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        return self._send("GET", url, params=params, headers=headers, **kwargs)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> Any:
        return self._send("POST", url, params=params, data=data, headers=headers, **kwargs)

    def _send(
        self, method: str, url: str, *, params: Any, headers: Any, data: Any = None, **kwargs: Any
    ) -> httpx.Response:
        timeout = kwargs.get("timeout")
        if isinstance(data, dict):  # MSAL gives the client assertion as bytes
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        try:
            return self._client.request(
                method,
                url,
                params=params,
                headers=headers,
                data=data,
                **({"timeout": timeout} if timeout else {}),
            )
        except httpx.TransportError as exc:
            where = str(httpx.URL(url).copy_with(query=None))
            raise TransientError(
                f"the token service at {where} cannot be reached: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        self._client.close()


def credential_of(
    *,
    secret: str | None,
    private_key: str | None,
    thumbprint: str | None,
    certificate: str | None,
) -> dict[str, str] | str:
    """MSAL's `client_credential`: the secret, or the certificate's key with its SHA-1
    thumbprint (RS256, x5t) or with its public certificate (PS256, x5t#S256)."""
    if secret is not None:
        return secret
    if private_key is None:
        raise PermanentError(
            "set client_secret, or certificate_key (with certificate_thumbprint or certificate)"
        )
    credential = {"private_key": private_key}
    if thumbprint:
        credential["thumbprint"] = thumbprint.replace(":", "").upper()
    elif certificate:
        credential["public_certificate"] = certificate
    else:
        raise PermanentError("certificate_key needs certificate_thumbprint or certificate")
    return credential


class TokenSource:
    """Access tokens for one app in one tenant, from the process-wide MSAL app."""

    def __init__(
        self,
        *,
        name: str,
        authority: str,
        client_id: str,
        credential: dict[str, str] | str,
        http_client: HttpxForMsal,
        shared_key: str = "",
    ) -> None:
        self.name = name
        self.authority = authority
        self.client_id = client_id
        fingerprint = hashlib.sha256(repr(credential).encode()).hexdigest()
        self._key = (authority, client_id, fingerprint, shared_key)
        self._credential = credential
        self._http_client = http_client

    @property
    def _app(self) -> msal.ConfidentialClientApplication:
        """Made on first use: MSAL reads the tenant's discovery document when it is made."""
        with _apps_lock:
            app = _apps.get(self._key)
            if app is None:
                host = httpx.URL(self.authority).host
                app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._credential,
                    authority=self.authority,
                    http_client=self._http_client,
                    instance_discovery=host in _MICROSOFT_HOSTS,
                )
                _apps[self._key] = app
            return app

    def token(self) -> str:
        """A valid access token for Graph (from the cache while it lasts)."""
        try:
            result = self._app.acquire_token_for_client(scopes=[GRAPH_SCOPE])
        except ValueError as exc:  # MSAL: discovery failed (unknown tenant, wrong host)
            raise PermanentError(
                f"{self.name}: the authority {self.authority} did not answer as a Microsoft "
                f"identity platform tenant: {str(exc).split(' Also ')[0][:300]}; check "
                "authority_host and tenant_id"
            ) from None
        if "access_token" in result:
            return str(result["access_token"])
        raise self._refusal(result)

    def fresh(self, rejected: str) -> str:
        """A new token, after Graph refused `rejected` (expired or revoked)."""
        cache = self._app.token_cache
        stale = list(
            cache.search(
                msal.TokenCache.CredentialType.ACCESS_TOKEN, target=[], query={"secret": rejected}
            )
        )
        for entry in stale:
            cache.remove_at(entry)
        log.info("graph token renewed", connector=self.name)
        return self.token()

    def _refusal(self, result: dict[str, Any]) -> PermanentError:
        code = str(result.get("error") or "unknown_error")
        description = str(result.get("error_description") or "")
        first_line = re.split(r"\s*Trace ID:", description)[0].strip()
        aadsts = _AADSTS.search(description)
        hint = _TOKEN_HINTS.get(aadsts[1], "") if aadsts else ""
        text = (
            f"{self.name}: the Microsoft identity platform refused a token for app "
            f"{self.client_id} at {self.authority}: {code}: {first_line[:300]}"
        )
        if hint:
            text += f"; {hint}"
        return PermanentError(text)
