"""Approvers prove who they are by signing in with Microsoft Entra ID.

The OpenID Connect authorization code flow with PKCE, run by MSAL's confidential client
(`initiate_auth_code_flow` / `acquire_token_by_auth_code_flow`). What the flow needs between
leaving for the authority and coming back (state, PKCE verifier, nonce, the page to return
to) rides in a signed, ten-minute cookie; who signed in rides in another signed, short-lived
cookie. Neither holds the client secret or a token: the tokens the authority returns are read
once for the ID token's claims and dropped (MSAL's token cache here keeps nothing).

MSAL checks the state and the nonce. Since MSAL 1.38 it no longer checks the ID token itself,
so `identity_of` does: the issuer, the audience, the tenant (`tid`), the lifetime, and the
claim compared with the approver's address. The signature is not checked: the token comes
straight from the token endpoint over TLS, which OpenID Connect Core 3.1.3.7 accepts instead.

The authority answers in the query (not `form_post`, which MSAL suggests): a cross-site POST
would not bring a SameSite=Lax cookie back. The code in that URL is single-use and bound to
the PKCE verifier, and the callback answers with a redirect that sends no Referer.

`SignInPages` is the approval pages' side: the "Sign in with Microsoft" page, the callback
(`/approvals/signin/callback`, the app registration's redirect URI) and the audit events.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import msal
import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import SecretStr

from approvals.pages import PAGE_HEADERS, PageError, Pages
from approvals.ports import ApprovalPorts
from connectors.base import TransientError
from connectors.entra_auth import HttpxForMsal
from offboarding.domain import audit
from offboarding.domain.models import ApprovalRequest

log = structlog.get_logger(__name__)

FLOW_COOKIE = "offboarding_signin_flow"
SESSION_COOKIE = "offboarding_signin"
FLOW_SECONDS = 600  # from leaving for the authority to coming back
SESSION_SECONDS = 1800  # how long one sign-in proves who is deciding
CLOCK_SKEW_SECONDS = 120
SCOPES = ["email"]  # MSAL adds openid and profile; offline_access is left out
_MICROSOFT_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.microsoftonline.us",
        "login.partner.microsoftonline.cn",
    }
)
_FLOW_KEYS = ("state", "redirect_uri", "scope", "code_verifier", "nonce")


class SignInConfig(Protocol):
    """What sign-in needs from the settings (`EntraSignInSettings`)."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> SecretStr: ...
    @property
    def authority_host(self) -> str: ...
    @property
    def match_claim(self) -> str: ...
    @property
    def ca_file(self) -> Path | None: ...


class SignInFailed(Exception):
    """The sign-in did not prove who is deciding; `reason` names the page's explanation."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # no_flow, expired, state, refused, token, tenant, unavailable
        self.detail = detail


@dataclass(frozen=True)
class SignedIn:
    """The account that signed in, as its ID token says."""

    claim: str  # the claim compared, e.g. preferred_username
    value: str  # its value, e.g. an address
    tenant_id: str
    object_id: str
    name: str

    def is_for(self, address: str) -> bool:
        return self.value.strip().casefold() == address.strip().casefold()

    def evidence(self) -> dict[str, str]:
        """What the audit log records of it (never a token)."""
        return {
            "proven_by": "entra_sign_in",
            "claim": self.claim,
            "value": self.value,
            "tenant_id": self.tenant_id,
            "object_id": self.object_id,
        }


@dataclass(frozen=True)
class Started:
    auth_uri: str  # where the browser signs in
    cookie: str  # the flow, signed: set as FLOW_COOKIE


class _KeepNothing(msal.TokenCache):  # type: ignore[misc]
    """A token cache that stores nothing: the service needs the ID token's claims once."""

    def add(self, event: Any, now: Any = None) -> None:
        return None


def _first_line(description: str) -> str:
    return re.split(r"\s*(?:Trace ID:|\r|\n)", description)[0].strip()[:300]


class ApproverSignIn:
    def __init__(self, config: SignInConfig, *, key: str, redirect_uri: str) -> None:
        self.config = config
        self.redirect_uri = redirect_uri
        self.authority = f"{config.authority_host.rstrip('/')}/{config.tenant_id}"
        self._flows = URLSafeTimedSerializer(
            key, salt="approver-sign-in-flow", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._sessions = URLSafeTimedSerializer(
            key, salt="approver-sign-in-session", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._client: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _app(self) -> msal.ConfidentialClientApplication:
        """Made on first use (MSAL reads the tenant's discovery document then), kept after."""
        with self._lock:
            if self._client is None:
                host = urlsplit(self.authority).hostname or ""
                ca_file = self.config.ca_file
                try:
                    # one token call per sign-in, minutes apart: no connection is kept open
                    http = httpx.Client(
                        verify=str(ca_file) if ca_file else True,
                        timeout=15,
                        limits=httpx.Limits(max_keepalive_connections=0),
                    )
                except OSError as exc:
                    raise SignInFailed(
                        "unavailable",
                        f"approver_sign_in.ca_file {ca_file} cannot be read: {exc.strerror}",
                    ) from None
                try:
                    self._client = msal.ConfidentialClientApplication(
                        self.config.client_id,
                        client_credential=self.config.client_secret.get_secret_value(),
                        authority=self.authority,
                        instance_discovery=host in _MICROSOFT_HOSTS,
                        exclude_scopes=["offline_access"],
                        token_cache=_KeepNothing(),
                        http_client=HttpxForMsal(http),
                    )
                except (ValueError, TransientError) as exc:
                    http.close()
                    raise SignInFailed(
                        "unavailable",
                        f"the sign-in service at {self.authority} did not answer as a "
                        f"Microsoft Entra ID tenant ({type(exc).__name__}); check "
                        "approver_sign_in.authority_host and tenant_id",
                    ) from None
            return self._client

    def start(self, return_to: str, *, login_hint: str | None, pick_account: bool) -> Started:
        """A new flow: the authority's sign-in address and the cookie that remembers it."""
        flow = self._app().initiate_auth_code_flow(
            SCOPES,
            redirect_uri=self.redirect_uri,
            login_hint=login_hint,
            prompt="select_account" if pick_account else None,
        )
        kept = {key: flow[key] for key in _FLOW_KEYS}
        return Started(str(flow["auth_uri"]), self._flows.dumps({"f": kept, "r": return_to}))

    def return_to(self, cookie: str | None) -> str | None:
        """The page the flow in `cookie` returns to, if the cookie is genuine and fresh."""
        try:
            return str(self._read_flow(cookie)["r"])
        except SignInFailed:
            return None

    def _read_flow(self, cookie: str | None) -> dict[str, Any]:
        if not cookie:
            raise SignInFailed("no_flow")
        try:
            data = self._flows.loads(cookie, max_age=FLOW_SECONDS)
        except SignatureExpired:
            raise SignInFailed("expired") from None
        except BadSignature:
            raise SignInFailed("no_flow") from None
        if not isinstance(data, dict) or not isinstance(data.get("f"), dict) or "r" not in data:
            raise SignInFailed("no_flow")
        return data

    def finish(self, cookie: str | None, answer: Mapping[str, str]) -> SignedIn:
        """Complete the flow in `cookie` with the authority's `answer` (the callback's query)."""
        flow = dict(self._read_flow(cookie)["f"])
        try:
            result = self._app().acquire_token_by_auth_code_flow(flow, dict(answer))
        except ValueError as exc:  # MSAL: state missing or not this flow's, or no code
            if "state" in str(exc):
                raise SignInFailed("state") from None
            detail = "the answer carried neither a code nor an error"
            raise SignInFailed("refused", detail) from None
        except RuntimeError:  # MSAL: the ID token's nonce is not this flow's
            raise SignInFailed("token", "the ID token's nonce is not this sign-in's") from None
        except TransientError as exc:
            raise SignInFailed("unavailable", str(exc)) from None
        if "error" in result:
            description = _first_line(str(result.get("error_description") or ""))
            error = str(result["error"])
            raise SignInFailed("refused", f"{error}: {description}" if description else error)
        claims = result.get("id_token_claims")
        if not isinstance(claims, dict):
            raise SignInFailed("token", "the authority returned no ID token")
        return self.identity_of(claims)

    def identity_of(self, claims: Mapping[str, Any], *, now: float | None = None) -> SignedIn:
        """The ID token's claims checked against this app and tenant, as a `SignedIn`."""
        config = self.config
        moment = time.time() if now is None else now
        tenant = str(claims.get("tid") or "")
        if tenant.casefold() != config.tenant_id.casefold():
            raise SignInFailed("tenant", f"tid {tenant or '(none)'}")
        issuer = f"{config.authority_host.rstrip('/')}/{config.tenant_id}/v2.0"
        if str(claims.get("iss") or "").casefold() != issuer.casefold():
            raise SignInFailed("token", f"issuer {claims.get('iss')!r} is not {issuer!r}")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if config.client_id not in audiences:
            raise SignInFailed("token", f"the ID token is for another app ({audience!r})")
        expires, issued = claims.get("exp"), claims.get("iat")
        if not isinstance(expires, int | float) or moment > expires + CLOCK_SKEW_SECONDS:
            raise SignInFailed("token", "the ID token has expired")
        if isinstance(issued, int | float) and issued > moment + CLOCK_SKEW_SECONDS:
            raise SignInFailed("token", "the ID token is issued in the future")
        value = claims.get(config.match_claim)
        if not isinstance(value, str) or not value.strip():
            raise SignInFailed("token", f"the ID token has no {config.match_claim} claim")
        return SignedIn(
            claim=config.match_claim,
            value=value.strip(),
            tenant_id=tenant,
            object_id=str(claims.get("oid") or claims.get("sub") or ""),
            name=str(claims.get("name") or value).strip(),
        )

    def session(self, identity: SignedIn) -> str:
        """The signed cookie value that says who signed in (set as SESSION_COOKIE)."""
        return self._sessions.dumps(asdict(identity))

    def signed_in(self, cookie: str | None) -> SignedIn | None:
        """Who signed in in this browser, within the last SESSION_SECONDS; else None."""
        if not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=SESSION_SECONDS)
            return SignedIn(**data)
        except (BadSignature, TypeError):
            return None


def configured_sign_in(settings: Any) -> ApproverSignIn | None:
    """Sign-in as the settings ask for it (`approver_sign_in`), or None: the link is the proof."""
    config = getattr(settings, "approver_sign_in", None)
    if config is None:
        return None
    return ApproverSignIn(
        config,
        key=settings.signing_key.get_secret_value(),
        redirect_uri=f"{settings.base_url}/approvals/signin/callback",
    )


class SignInNeeded(Exception):
    """A decision came without a sign-in of the link's approver: nothing is decided."""

    def __init__(self, identity: SignedIn | None) -> None:
        super().__init__("sign-in needed")
        self.identity = identity


def _keep(response: Response, request: Request, name: str, value: str, seconds: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        httponly=True,
        samesite="lax",  # sent on the way back from the authority (a top-level GET)
        secure=request.url.scheme == "https",
        path="/approvals",
    )


class SignInPages:
    """The approval pages' side of sign-in: asking for it, the authority's way back, and
    what the audit log records of it. `open_request` is the approval page's own check of
    a link (it raises `PageError` for a link that no longer works)."""

    def __init__(
        self,
        sign_in: ApproverSignIn,
        pages: Pages,
        services: ApprovalPorts,
        open_request: Callable[[str], ApprovalRequest],
    ) -> None:
        self.sign_in = sign_in
        self.pages = pages
        self.services = services
        self.open_request = open_request

    def who(self, request: Request) -> SignedIn | None:
        return self.sign_in.signed_in(request.cookies.get(SESSION_COOKIE))

    async def ask(
        self, request: Request, token: str, req: ApprovalRequest, lang: str, who: SignedIn | None
    ) -> HTMLResponse:
        """Ask for a sign-in (again, or as someone else): nothing is shown or decided first."""
        try:
            started = await run_in_threadpool(
                partial(
                    self.sign_in.start,
                    token,
                    login_hint=req.approver_email,
                    pick_account=who is not None,
                )
            )
        except SignInFailed as failed:
            log.warning("approver sign-in unavailable", problem=failed.detail)
            return self.failed(request, lang, failed, link_url=None)
        person = self.services.people.find_person(req.approver_id)
        context: dict[str, Any] = {
            "approver_name": person.display_name if person else req.approver_id,
            "approver_email": req.approver_email,
            "sign_in_url": started.auth_uri,
        }
        if who is None:
            name, status = f"signin_required.{lang}", 200 if request.method == "GET" else 401
            context["expired"] = request.method != "GET"
        else:
            name, status = f"signin_mismatch.{lang}", 403
            context["signed_in_as"] = who.value
        response = self.pages.page(request, name, lang, status, **context)
        _keep(response, request, FLOW_COOKIE, started.cookie, FLOW_SECONDS)
        return response

    def failed(
        self, request: Request, lang: str, failed: SignInFailed, *, link_url: str | None
    ) -> HTMLResponse:
        status = {"unavailable": 503, "tenant": 403}.get(failed.reason, 400)
        response = self.pages.page(
            request,
            f"signin_failed.{lang}",
            lang,
            status,
            switch_url=None,  # switching would replay the authority's answer
            reason=failed.reason,
            detail=failed.detail,
            link_url=link_url,
        )
        response.delete_cookie(FLOW_COOKIE, path="/approvals", httponly=True, samesite="lax")
        return response

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.get("/signin/callback", response_class=HTMLResponse)
        async def signed_in(request: Request) -> Response:
            """Where the authority sends the browser back: prove who signed in, then
            return to the approval page. Decides nothing."""
            cookie = request.cookies.get(FLOW_COOKIE)
            token = self.sign_in.return_to(cookie)
            req = await run_in_threadpool(self._request_or_none, token)
            lang = self.pages.language(request, req.language if req else None)
            link_url = str(request.url_for("confirm", token=token)) if token else None
            try:
                who = await run_in_threadpool(
                    self.sign_in.finish, cookie, dict(request.query_params)
                )
            except SignInFailed as failed:
                if req is not None:
                    await run_in_threadpool(self._failed_sign_in, req, failed)
                return self.failed(request, lang, failed, link_url=link_url)
            assert link_url is not None  # a flow that finished had a page to return to
            if req is not None and who.is_for(req.approver_email):
                await run_in_threadpool(self._signed_in, req, who)
            elif req is not None:
                await run_in_threadpool(partial(self.refuse, req, who, by="approval sign-in"))
            response = RedirectResponse(link_url, status_code=303, headers=PAGE_HEADERS)
            _keep(response, request, SESSION_COOKIE, self.sign_in.session(who), SESSION_SECONDS)
            response.delete_cookie(FLOW_COOKIE, path="/approvals", httponly=True, samesite="lax")
            return response

        return router

    def _request_or_none(self, token: str | None) -> ApprovalRequest | None:
        try:
            return self.open_request(token) if token else None
        except PageError:
            return None  # the page it returns to says why

    def _signed_in(self, req: ApprovalRequest, who: SignedIn) -> None:
        audit.record(
            self.services.engine,
            action="approval.signed_in",
            actor=f"employee:{req.approver_id}",
            case_id=req.case_id,
            details={"request_id": req.id, "identity": who.evidence()},
        )

    def _failed_sign_in(self, req: ApprovalRequest, failed: SignInFailed) -> None:
        audit.record(
            self.services.engine,
            action="approval.sign_in_failed",
            actor=f"employee:{req.approver_id}",
            outcome="refused",
            case_id=req.case_id,
            details={"request_id": req.id, "reason": failed.reason, "detail": failed.detail},
        )

    def refuse(self, req: ApprovalRequest, who: SignedIn | None, *, by: str) -> None:
        """A refused attempt, recorded like the four-eyes rules' refusals."""
        audit.record(
            self.services.engine,
            action="decision.refused",
            actor=f"sign-in:{who.value}" if who else f"employee:{req.approver_id}",
            outcome="refused",
            case_id=req.case_id,
            details={
                "request_id": req.id,
                "refusals": ["signed_in_as_someone_else" if who else "not_signed_in"],
                "by": by,
                "link_for": req.approver_email,
                **({"identity": who.evidence()} if who else {}),
            },
        )
