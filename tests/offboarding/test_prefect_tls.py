"""Prefect's API clients share one TLS context per process (`prefect_tls`): Prefect would
load the whole CA bundle for every client it makes."""

from __future__ import annotations

import ssl

from prefect.client.orchestration import PrefectClient, SyncPrefectClient

from offboarding.orchestration.prefect_tls import share_tls_contexts, shared_context


def verify_of(client: PrefectClient | SyncPrefectClient) -> object:
    """The context the client's transport was built with."""
    pool = client._client._transport._pool  # type: ignore[union-attr]
    return pool._ssl_context


def test_clients_share_one_context_unless_they_bring_their_own() -> None:
    share_tls_contexts()
    share_tls_contexts()  # idempotent: not wrapped twice
    one = PrefectClient("http://127.0.0.1:1/api")
    two = SyncPrefectClient("http://127.0.0.1:1/api")
    assert verify_of(one) is shared_context()
    assert verify_of(two) is shared_context()
    assert shared_context().verify_mode == ssl.CERT_REQUIRED  # still checks certificates
    own = ssl.create_default_context()
    mine = PrefectClient("http://127.0.0.1:1/api", httpx_settings={"verify": own})
    assert verify_of(mine) is own
