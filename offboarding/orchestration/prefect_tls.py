"""One TLS context per process for Prefect's API clients, instead of one per client.

Prefect 3 builds a new `ssl.SSLContext` for every API client it makes, loading the whole CA
bundle each time (15-20 ms of CPU), even for a plain-http API. A flow run makes a client for
nearly every artifact, state change and log batch, and the service makes one per run it
starts, reads or resumes; under a reorganisation that is a large share of the CPU.

`share_tls_contexts()` makes every Prefect client of this process that does not bring its own
context use one built the same way, once per CA file and verify setting. Clients that pass a
client certificate (`cert`) still get a context of their own: loading one changes the context.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

import certifi

_lock = threading.Lock()
_contexts: dict[tuple[str, bool], ssl.SSLContext] = {}
_PATCHED = "_offboarding_shared_tls"


def shared_context() -> ssl.SSLContext:
    """What Prefect would build for a client now (its CA file and verify setting), once."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    insecure = bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value())
    cafile = PREFECT_API_SSL_CERT_FILE.value() or certifi.where()
    key = (str(cafile), insecure)
    with _lock:
        if key not in _contexts:
            if insecure:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                context = ssl.create_default_context(cafile=cafile)
            _contexts[key] = context
        return _contexts[key]


def _sharing(init: Callable[..., None]) -> Callable[..., None]:
    @wraps(init)
    def __init__(self: Any, *args: Any, httpx_settings: dict[str, Any] | None = None, **kw: Any):
        settings = dict(httpx_settings or {})
        if "verify" not in settings and "cert" not in settings:
            settings["verify"] = shared_context()
        init(self, *args, httpx_settings=settings, **kw)

    setattr(__init__, _PATCHED, True)
    return __init__


def share_tls_contexts() -> None:
    """Install the sharing on Prefect's API clients (idempotent)."""
    from prefect.client.orchestration import PrefectClient, SyncPrefectClient

    for client in (PrefectClient, SyncPrefectClient):
        if not getattr(client.__init__, _PATCHED, False):
            client.__init__ = _sharing(client.__init__)  # type: ignore[method-assign]
