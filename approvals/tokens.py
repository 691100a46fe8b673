"""Signed values: emailed approval links, CSRF tokens, and the decision handed to the flow.

All signing goes through itsdangerous (HMAC-SHA256); nothing hand-rolled.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, SignatureExpired, Signer, URLSafeTimedSerializer
from pydantic import BaseModel

from offboarding.domain.audit import canonical_json


class LinkInvalid(Exception):
    """The token was not issued by this service or was altered."""


class LinkExpired(Exception):
    """The token is genuine but older than its lifetime."""


@dataclass(frozen=True)
class LinkClaims:
    request_id: str
    case_id: str
    approver_id: str
    plan_hash: str


class _SignedLinks:
    """Personal links and their pages' CSRF tokens: timed, signed, salted per purpose."""

    def __init__(self, key: str, *, ttl: timedelta, purpose: str) -> None:
        self._links = URLSafeTimedSerializer(
            key, salt=f"{purpose}-link", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self._csrf = URLSafeTimedSerializer(
            key, salt=f"{purpose}-csrf", signer_kwargs={"digest_method": hashlib.sha256}
        )
        self.ttl = ttl
        self._purpose = purpose

    def _dumps(self, data: dict[str, str]) -> str:
        return self._links.dumps(data)

    def _loads(self, token: str) -> dict[str, str]:
        what = "approval link" if self._purpose == "approval" else "link"
        try:
            data = self._links.loads(token, max_age=int(self.ttl.total_seconds()))
        except SignatureExpired as exc:
            raise LinkExpired(f"this {what} has expired") from exc
        except BadSignature as exc:
            raise LinkInvalid(f"this {what} is not valid") from exc
        if not isinstance(data, dict):
            raise LinkInvalid(f"this {what} is not valid")
        return data

    def new_csrf(self, request_id: str) -> tuple[str, str]:
        """(cookie nonce, form token): the POST must bring both, matching."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._csrf.dumps({"r": request_id, "n": nonce})

    def check_csrf(self, form_token: str, cookie_nonce: str | None, request_id: str) -> bool:
        if not form_token or not cookie_nonce:
            return False
        try:
            data = self._csrf.loads(form_token, max_age=int(self.ttl.total_seconds()))
        except BadSignature:
            return False
        return (
            isinstance(data, dict)
            and data.get("r") == request_id
            and secrets.compare_digest(str(data.get("n", "")), cookie_nonce)
        )


class LinkSigner(_SignedLinks):
    """Issues and reads the approval-link token bound to case, approver and plan hash."""

    def __init__(self, key: str, *, ttl: timedelta) -> None:
        super().__init__(key, ttl=ttl, purpose="approval")

    def issue(self, claims: LinkClaims) -> str:
        return self._dumps(
            {
                "r": claims.request_id,
                "c": claims.case_id,
                "a": claims.approver_id,
                "h": claims.plan_hash,
            }
        )

    def read(self, token: str) -> LinkClaims:
        data = self._loads(token)
        try:
            return LinkClaims(
                request_id=data["r"], case_id=data["c"], approver_id=data["a"], plan_hash=data["h"]
            )
        except (KeyError, TypeError) as exc:
            raise LinkInvalid("this approval link is not valid") from exc


class SignedDecision(BaseModel):
    """What the approval pages hand to the waiting flow run (its run input)."""

    decision_id: str
    case_id: str
    plan_hash: str
    approver_id: str
    decision: str
    signature: str = ""

    def message(self) -> bytes:
        return canonical_json(
            [self.decision_id, self.case_id, self.plan_hash, self.approver_id, self.decision]
        ).encode()


class DecisionSigner:
    """Signs decisions in the web app; the flow verifies them before acting."""

    def __init__(self, key: str) -> None:
        self._signer = Signer(key, salt="approval-decision", digest_method=hashlib.sha256)

    def sign(self, decision: SignedDecision) -> SignedDecision:
        signature = self._signer.get_signature(decision.message()).decode()
        return decision.model_copy(update={"signature": signature})

    def is_genuine(self, decision: SignedDecision) -> bool:
        if not decision.signature:
            return False
        return self._signer.verify_signature(decision.message(), decision.signature.encode())


@dataclass(frozen=True)
class AttestationClaims:
    attestation_id: str
    case_id: str
    assignee_id: str
    grant_key: str


class AttestationSigner(_SignedLinks):
    """Issues and reads the link that lets one person attest one manual step.

    The link works while the step is open (the attestation row decides), at most `ttl`.
    """

    def __init__(self, key: str, *, ttl: timedelta) -> None:
        super().__init__(key, ttl=ttl, purpose="attestation")

    def issue(self, claims: AttestationClaims) -> str:
        return self._dumps(
            {
                "t": claims.attestation_id,
                "c": claims.case_id,
                "a": claims.assignee_id,
                "g": claims.grant_key,
            }
        )

    def read(self, token: str) -> AttestationClaims:
        data = self._loads(token)
        try:
            return AttestationClaims(
                attestation_id=data["t"],
                case_id=data["c"],
                assignee_id=data["a"],
                grant_key=data["g"],
            )
        except (KeyError, TypeError) as exc:
            raise LinkInvalid("this link is not valid") from exc
