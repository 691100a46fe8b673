"""A SCIM 2.0 app in this process: scim2-server, in memory, served on 127.0.0.1.

`offboarding demo` runs one as the company's own information system (see `demo.apex`);
the test suite's SCIM peer (`tests/connectors/scim_peer.py`) is served with `serve` too.

The application is scim2-server's own test application (`BearerTokenApplication`: static
Bearer tokens; a wrong or missing token gets 401) under the threaded wsgiref server its
`scim2-server` command uses. It starts in milliseconds on a port the system picks, and its
threads are daemons: it ends with the process that started it. scim2-server is a
development dependency; scripts/bootstrap installs it.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from scim2_models import ETag, ScimProvider
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME, BearerTokenApplication
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)


class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the demo's console shows what matters."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@cache
def provider(*, etag: bool = True) -> ScimProvider:
    """The service description (RFC 7643 schemas, Bearer tokens). Immutable, so shared:
    building its models takes a quarter of a second."""
    config = load_default_service_provider_config()
    config.etag = ETag(supported=etag)
    config.authentication_schemes = [BEARER_TOKEN_SCHEME]
    return ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )


def bearer_token_app(token: str, *, etag: bool = True) -> BearerTokenApplication:
    """scim2-server's application over an empty in-memory store, accepting only `token`."""
    if not token:
        # BearerTokenApplication without tokens accepts every request
        raise ValueError("the SCIM app needs a bearer token")
    return BearerTokenApplication(InMemoryStorage(), provider(etag=etag), bearer_tokens=[token])


@dataclass
class ServedApp:
    """A WSGI application served from a thread; `stop()` ends it."""

    base_url: str  # the SCIM root, http(s)://127.0.0.1:<port>/v2
    server: ThreadingWSGIServer
    thread: threading.Thread
    stopped: bool = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()


def serve(application: WSGIApplication, *, tls: tuple[Path, Path] | None = None) -> ServedApp:
    """Serve `application` on a free port of 127.0.0.1; with `tls` (certificate and private
    key, PEM) over https."""
    server = make_server(
        "127.0.0.1", 0, application, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    scheme = "http"
    if tls is not None:
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        except BaseException:
            server.server_close()
            raise
        scheme = "https"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="scim-app", daemon=True
    )
    thread.start()
    return ServedApp(f"{scheme}://127.0.0.1:{server.server_port}/v2", server, thread)


@contextmanager
def running_scim_app(token: str, *, etag: bool = True) -> Iterator[ServedApp]:
    """An empty SCIM app that accepts only `token`, stopped on exit."""
    served = serve(bearer_token_app(token, etag=etag))
    try:
        yield served
    finally:
        served.stop()
