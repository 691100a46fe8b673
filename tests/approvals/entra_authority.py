"""A Microsoft Entra ID authority on the wire, for the approver sign-in tests.

Served over HTTPS on 127.0.0.1 (a CA made for the run: MSAL only talks to an https
authority), it answers what MSAL and a browser use in the authorization code flow with
PKCE, the way Microsoft's identity platform documents it:

- `GET /{tenant}/v2.0/.well-known/openid-configuration` (an unknown tenant: 400 AADSTS90002);
- `GET /{tenant}/oauth2/v2.0/authorize`: checks the app, the redirect URI, `response_type=code`,
  the `openid` scope and an S256 `code_challenge`, remembers them with the nonce, signs in
  whoever the test put "at the keyboard" and redirects back with `code` and `state`
  (nobody at the keyboard: `error=access_denied`, as when the user cancels);
- `POST /{tenant}/oauth2/v2.0/token`: the authorization_code grant; checks the client secret,
  the code (one use, ten minutes), the redirect URI and that the code_verifier hashes to the
  recorded code_challenge; answers an RS256-signed ID token (aud, iss, tid, nonce,
  preferred_username, exp/iat, ...) or Entra's error body (`invalid_grant` AADSTS70008,
  54005, 501481; `invalid_client` AADSTS7000215);
- `GET /{tenant}/discovery/v2.0/keys`: the signing key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from demo.graph_sandbox_serve import make_certificates

CODE_SECONDS = 600
_ERRORS = {
    70008: (
        "invalid_grant",
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    54005: (
        "invalid_grant",
        "OAuth2 Authorization code was already redeemed, please retry with a new valid code "
        "or use an existing refresh token.",
    ),
    501481: (
        "invalid_grant",
        "The Code_Verifier does not match the code_challenge supplied in the authorization "
        "request.",
    ),
    7000215: (
        "invalid_client",
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        "'{client_id}'.",
    ),
    90002: ("invalid_tenant", "Tenant '{tenant}' not found."),
    50011: (
        "invalid_request",
        "The redirect URI '{redirect_uri}' specified in the request does not match the "
        "redirect URIs configured for the application '{client_id}'.",
    ),
    700016: (
        "unauthorized_client",
        "Application with identifier '{client_id}' was not found in the directory.",
    ),
    900144: ("invalid_request", "The request body must contain the following parameter: '{name}'."),
}


@dataclass
class Account:
    username: str  # preferred_username, the UPN
    name: str
    tenant_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    email: str | None = None


@dataclass
class Grant:
    """An authorization code as the authority remembers it."""

    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    scope: str
    account: Account
    issued: float
    redeemed: bool = False


@dataclass
class EntraAuthority:
    """The authority's state: one tenant, one app, who is at the keyboard, what was asked."""

    tenant_id: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: list[str]
    origin: str = ""  # set once it listens
    ca_file: Path | None = None
    keyboard: Account | None = None
    grants: dict[str, Grant] = field(default_factory=dict, repr=False)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)  # secret left out
    _key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        repr=False,
    )
    _kid: str = field(default_factory=lambda: secrets.token_hex(8))

    def sign_in_as(self, username: str, name: str, *, tenant_id: str | None = None) -> Account:
        """The person who will sign in at the next authorize request."""
        self.keyboard = Account(username, name, tenant_id or self.tenant_id)
        return self.keyboard

    def expire_codes(self) -> None:
        for grant in self.grants.values():
            grant.issued -= CODE_SECONDS + 1

    @property
    def issuer(self) -> str:
        return f"{self.origin}/{self.tenant_id}/v2.0"

    # -- the wire ------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery),
                Route("/{tenant}/discovery/v2.0/keys", self._keys),
                Route("/{tenant}/oauth2/v2.0/authorize", self._authorize),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            ]
        )

    def _error(self, status: int, code: int, **values: str) -> JSONResponse:
        error, text = _ERRORS[code]
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return JSONResponse(
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text.format(**values)} Trace ID: {trace} "
                f"Correlation ID: {correlation} Timestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"{self.origin}/error?code={code}",
            },
            status_code=status,
        )

    async def _discovery(self, request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if tenant != self.tenant_id:
            return self._error(400, 90002, tenant=tenant)
        base = f"{self.origin}/{tenant}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": self.issuer,
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "oid"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
            }
        )

    async def _keys(self, request: Request) -> Response:
        public = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        return JSONResponse({"keys": [{**public, "kid": self._kid, "use": "sig"}]})

    async def _authorize(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.authorize_requests.append(query)
        if request.path_params["tenant"] != self.tenant_id:
            return self._error(400, 90002, tenant=request.path_params["tenant"])
        client_id = query.get("client_id", "")
        if client_id != self.client_id:
            return self._error(400, 700016, client_id=client_id)
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return self._error(400, 50011, redirect_uri=redirect_uri, client_id=client_id)
        back: dict[str, str] = {"state": query["state"]} if "state" in query else {}
        scopes = set(query.get("scope", "").split())
        if (
            query.get("response_type") != "code"
            or "openid" not in scopes
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
        ):
            back |= {
                "error": "invalid_request",
                "error_description": "AADSTS9002325: Proof Key for Code Exchange is required "
                "for cross-origin authorization code redemption.",
            }
        elif self.keyboard is None:
            back |= {
                "error": "access_denied",
                "error_description": "AADSTS65004: User declined to consent to access the app.",
            }
        else:
            code = secrets.token_urlsafe(48)
            self.grants[code] = Grant(
                client_id=client_id,
                redirect_uri=redirect_uri,
                challenge=query["code_challenge"],
                nonce=query.get("nonce", ""),
                scope=query["scope"],
                account=self.keyboard,
                issued=time.time(),
            )
            back = {"code": code, **back, "session_state": str(uuid.uuid4())}
        return RedirectResponse(f"{redirect_uri}?{urlencode(back)}", status_code=302)

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        self.token_requests.append({k: v for k, v in form.items() if k != "client_secret"})
        if request.path_params["tenant"] != self.tenant_id:
            return self._error(400, 90002, tenant=request.path_params["tenant"])
        for name in ("grant_type", "client_id", "code", "redirect_uri", "code_verifier"):
            if not form.get(name):
                return self._error(400, 900144, name=name)
        if form["client_id"] != self.client_id:
            return self._error(400, 700016, client_id=form["client_id"])
        if not secrets.compare_digest(form.get("client_secret", ""), self.client_secret):
            return self._error(401, 7000215, client_id=self.client_id)
        if form["grant_type"] != "authorization_code":
            return self._error(400, 900144, name="grant_type")
        grant = self.grants.get(form["code"])
        if grant is None or time.time() > grant.issued + CODE_SECONDS:
            return self._error(400, 70008)
        if grant.redeemed:
            return self._error(400, 54005)
        if grant.redirect_uri != form["redirect_uri"] or grant.client_id != form["client_id"]:
            return self._error(
                400, 50011, redirect_uri=form["redirect_uri"], client_id=self.client_id
            )
        digest = hashlib.sha256(form["code_verifier"].encode("ascii")).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant.challenge:
            return self._error(400, 501481)
        grant.redeemed = True
        return JSONResponse(self._tokens(grant), headers={"Cache-Control": "no-store"})

    def _tokens(self, grant: Grant) -> dict[str, Any]:
        now = int(time.time())
        account = grant.account
        claims = {
            "aud": self.client_id,
            # a token for a user of another tenant comes from that tenant's issuer
            "iss": f"{self.origin}/{account.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": account.name,
            "nonce": grant.nonce,
            "oid": account.object_id,
            "preferred_username": account.username,
            "rh": "0.A" + secrets.token_urlsafe(12),
            "sid": str(uuid.uuid4()),
            "sub": base64.urlsafe_b64encode(
                hashlib.sha256(f"{account.object_id}{self.client_id}".encode()).digest()
            )
            .rstrip(b"=")
            .decode(),
            "tid": account.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "2.0",
        }
        if "email" in grant.scope.split() and account.email:
            claims["email"] = account.email
        id_token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._kid})
        client_info = json.dumps({"uid": account.object_id, "utid": account.tenant_id})
        return {
            "token_type": "Bearer",
            "scope": grant.scope,
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": secrets.token_urlsafe(64),
            "id_token": id_token,
            "client_info": base64.urlsafe_b64encode(client_info.encode()).rstrip(b"=").decode(),
        }


@contextmanager
def running_authority(redirect_uris: list[str]) -> Iterator[EntraAuthority]:
    """An authority for one new tenant and app, served over HTTPS on 127.0.0.1."""
    with tempfile.TemporaryDirectory(prefix="entra-authority-") as tmp:
        ca_file, cert, key = make_certificates(Path(tmp))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        authority = EntraAuthority(
            tenant_id=str(uuid.uuid4()),
            client_id=str(uuid.uuid4()),
            client_secret=secrets.token_urlsafe(30),
            redirect_uris=redirect_uris,
            origin=f"https://127.0.0.1:{sock.getsockname()[1]}",
            ca_file=ca_file,
        )
        config = uvicorn.Config(
            authority.app(),
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the Entra authority did not start within 10 s")
            time.sleep(0.01)
        try:
            yield authority
        finally:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
