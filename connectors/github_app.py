"""GitHub App authentication: an RS256 JWT signed with the app's private key, exchanged
for an installation access token, kept until shortly before it expires.

GitHub's docs ("Generating a JSON Web Token (JWT) for a GitHub App", "Generating an
installation access token"): the JWT carries `iat` (60 s in the past, against clock drift),
`exp` (at most 10 minutes later) and `iss` (the app's id); `POST
/app/installations/{installation_id}/access_tokens` answers `{"token", "expires_at"}`; the
token lasts an hour. The JWT is signed here with `cryptography` (RSASSA-PKCS1-v1_5, SHA-256),
so no JWT library is needed.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import SecretStr

from connectors.base import PermanentError

REFRESH_MARGIN = 300  # mint a new token this many seconds before the old one expires


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def app_jwt(app_id: str, private_key: SecretStr, now: float | None = None) -> str:
    """A GitHub App's JWT (RS256), valid for nine minutes."""
    try:
        key = serialization.load_pem_private_key(
            private_key.get_secret_value().encode(), password=None
        )
    except (ValueError, TypeError) as exc:
        raise PermanentError(
            "the GitHub App private_key is not a PEM private key without a passphrase; "
            "download a new one from the app's settings (Private keys)"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PermanentError("the GitHub App private_key must be an RSA key")
    issued = int(now if now is not None else time.time()) - 60
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iat": issued, "exp": issued + 600, "iss": app_id}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


class InstallationToken:
    """The installation token, minted on first use and again shortly before it expires.

    `mint(jwt)` sends the exchange and returns `(token, expires_at)`; it is the connector's
    own request (through the HTTP choke point), so errors are mapped as for any call.
    """

    def __init__(
        self,
        app_id: str,
        private_key: SecretStr,
        mint: Callable[[str], tuple[str, str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._app_id = app_id
        self._private_key = private_key
        self._mint = mint
        self._clock = clock
        self._token: SecretStr | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InstallationToken(app_id={self._app_id!r})"

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires - REFRESH_MARGIN:
                token, expires_at = self._mint(app_jwt(self._app_id, self._private_key))
                self._token = SecretStr(token)
                self._expires = _timestamp(expires_at, self._clock() + 3600)
            return self._token.get_secret_value()


def _timestamp(value: str, default: float) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
