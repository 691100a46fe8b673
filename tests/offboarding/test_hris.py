from __future__ import annotations

import pytest

from offboarding.intake.hris import SignatureError, sign, verify_signature

BODY = b'{"id":"evt-1"}'


def test_a_fresh_signature_verifies() -> None:
    verify_signature(sign("s3cret", BODY), BODY, ["s3cret"])


def test_any_of_several_v1_values_may_match() -> None:
    header = sign("new-secret", BODY, timestamp=1_000)
    t, v1 = header.split(",")
    rotated = f"{t},v1={'0' * 64},{v1}"
    verify_signature(rotated, BODY, ["new-secret"], now=1_001)


def test_a_previous_secret_is_accepted_during_rotation() -> None:
    verify_signature(sign("old", BODY, timestamp=10), BODY, ["new", "old"], now=11)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        ("", "missing"),
        ("v1=abc", "needs t="),
        ("t=abc,v1=abc", "not a number"),
        ("t=100", "needs t="),
    ],
)
def test_malformed_headers_are_refused(header: str | None, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        verify_signature(header, BODY, ["s"], now=100)


def test_a_stale_timestamp_is_refused() -> None:
    header = sign("s", BODY, timestamp=1_000)
    with pytest.raises(SignatureError, match="too old"):
        verify_signature(header, BODY, ["s"], now=1_000 + 301)


def test_a_changed_body_is_refused() -> None:
    header = sign("s", BODY, timestamp=50)
    with pytest.raises(SignatureError, match="no v1"):
        verify_signature(header, BODY + b" ", ["s"], now=50)


def test_a_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify_signature(sign("s", BODY, timestamp=5), BODY, ["other"], now=5)
