from __future__ import annotations

from datetime import timedelta

import pytest
from itsdangerous import URLSafeTimedSerializer

from approvals.tokens import (
    DecisionSigner,
    LinkClaims,
    LinkExpired,
    LinkInvalid,
    LinkSigner,
    SignedDecision,
)

CLAIMS = LinkClaims(request_id="r1", case_id="c1", approver_id="E0010", plan_hash="a" * 64)


def test_a_link_round_trips_its_claims() -> None:
    signer = LinkSigner("k" * 32, ttl=timedelta(hours=72))
    assert signer.read(signer.issue(CLAIMS)) == CLAIMS


def test_a_tampered_link_is_invalid() -> None:
    signer = LinkSigner("k" * 32, ttl=timedelta(hours=72))
    token = signer.issue(CLAIMS)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(LinkInvalid):
        signer.read(tampered)


def test_a_link_from_another_key_is_invalid() -> None:
    token = LinkSigner("other" * 8, ttl=timedelta(hours=1)).issue(CLAIMS)
    with pytest.raises(LinkInvalid):
        LinkSigner("k" * 32, ttl=timedelta(hours=1)).read(token)


def test_an_old_link_is_expired() -> None:
    signer = LinkSigner("k" * 32, ttl=timedelta(seconds=0))
    token = signer.issue(CLAIMS)
    import time

    time.sleep(1.1)
    with pytest.raises(LinkExpired):
        signer.read(token)


def test_a_genuine_token_with_a_foreign_payload_is_invalid() -> None:
    import hashlib

    raw = URLSafeTimedSerializer(
        "k" * 32, salt="approval-link", signer_kwargs={"digest_method": hashlib.sha256}
    ).dumps(["not", "a", "dict"])
    with pytest.raises(LinkInvalid):
        LinkSigner("k" * 32, ttl=timedelta(hours=1)).read(raw)


def test_csrf_needs_the_matching_cookie_and_request() -> None:
    signer = LinkSigner("k" * 32, ttl=timedelta(hours=1))
    nonce, token = signer.new_csrf("r1")
    assert signer.check_csrf(token, nonce, "r1")
    assert not signer.check_csrf(token, "other", "r1")
    assert not signer.check_csrf(token, nonce, "r2")
    assert not signer.check_csrf("", nonce, "r1")
    assert not signer.check_csrf(token, None, "r1")
    assert not signer.check_csrf("garbage", nonce, "r1")


def test_a_signed_decision_verifies_and_any_change_breaks_it() -> None:
    signer = DecisionSigner("k" * 32)
    decision = signer.sign(
        SignedDecision(
            decision_id="d1", case_id="c1", plan_hash="h", approver_id="E0010", decision="approve"
        )
    )
    assert signer.is_genuine(decision)
    assert not signer.is_genuine(decision.model_copy(update={"approver_id": "E0007"}))
    assert not signer.is_genuine(decision.model_copy(update={"decision": "reject"}))
    assert not signer.is_genuine(decision.model_copy(update={"signature": ""}))
    assert not DecisionSigner("other" * 8).is_genuine(decision)
