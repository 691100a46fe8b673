"""The shared HTTP base (`connectors/http.py`), against a real HTTP peer (scim2-server):
dry run refused at the one choke point, credentials never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from connectors.base import ConnectorError, DryRunRefused
from connectors.redaction import REDACTED, redact_headers, redact_url
from connectors.scim import ScimConnector, from_config
from tests.connectors.scim_peer import TOKEN, ScimPeer, running_peer


@pytest.fixture
def peer() -> Iterator[ScimPeer]:
    with running_peer() as running:
        yield running


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_dry_run_refuses_every_write_before_sending_it(peer: ScimPeer, method: str) -> None:
    dry = from_config(peer.connector_config(), dry_run=True)
    with dry.session() as client, pytest.raises(DryRunRefused, match=f"not sending {method}"):
        dry._request(client, method, "Users", body={"userName": "x"})
    assert peer.seen == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_dry_run_still_reads(peer: ScimPeer, method: str) -> None:
    dry = from_config(peer.connector_config(), dry_run=True)
    with dry.session() as client:
        try:
            dry._request(client, method, "ServiceProviderConfig")
        except DryRunRefused:  # pragma: no cover - the assertion below says what went wrong
            pytest.fail(f"{method} is safe and must be sent in a dry run")
        except ConnectorError:
            pass  # the server may not implement HEAD or OPTIONS: what counts is that it was sent
    assert [s.method for s in peer.seen] == [method]


def test_headers_and_urls_are_redacted() -> None:
    headers = redact_headers(
        {"Authorization": "Bearer abc", "X-Api-Key": "k", "Cookie": "s=1", "Accept": "a/b"}
    )
    assert headers == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Cookie": REDACTED,
        "Accept": "a/b",
    }
    url = redact_url("https://user:pw@api.example.test/v2/Users?access_token=abc&filter=x")
    assert "abc" not in url and "pw" not in url and "filter=x" in url


def test_no_credential_reaches_the_logs(peer: ScimPeer, caplog: pytest.LogCaptureFixture) -> None:
    connector = from_config(peer.connector_config(), dry_run=False)
    assert isinstance(connector, ScimConnector)
    caplog.set_level(logging.INFO, logger="httpx")
    with capture_logs() as logs, connector.session() as client:
        connector._request(client, "GET", "Users", params={"access_token": "query-secret-1"})
    requests = [e for e in logs if e["event"] == "http request"]
    assert requests and requests[0]["headers"]["authorization"] == REDACTED
    shown = repr(logs) + caplog.text
    assert "HTTP Request: GET" in caplog.text  # httpx's own line, with the URL redacted
    assert TOKEN not in shown and "query-secret-1" not in shown
