"""More than one web process on the service's port (production, `web_processes` > 1).

Every web process listens on the same host and port with SO_REUSEPORT, and the kernel
spreads new connections over them, so a burst of HR events uses more than one core. The
service's own process also runs the dispatcher. The others have no dispatcher: when they
store a case or a decision they wake the dispatcher with a datagram on a local socket,
and it also looks for work every `dispatch_interval_seconds`, so a lost datagram only
costs time. An extra process announces itself on the same socket once it serves.

    python -m offboarding.wiring.web_processes   # started by the service, not by hand
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

WAKE = b"wake"
URGENT = b"urgent"  # an urgent case: the dispatcher does not wait for the burst to end
READY = b"ready "


def wake_address(home: Path) -> str:
    """A Linux abstract socket name for this data dir (no file to clean up, no path limit)."""
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:24]
    return f"\0offboarding-dispatcher-{digest}"


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other processes may bind too (SO_REUSEPORT).
    Not yet listening: uvicorn listens once the app has started."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(False)
    return sock


class WakeListener(asyncio.DatagramProtocol):
    """In the service's process: each datagram from another web process wakes the
    dispatcher; "ready <pid>" records that process as serving."""

    def __init__(self, wake: Callable[..., None]) -> None:
        self._wake = wake
        self.wakes = 0  # wake-ups sent by the other web processes
        self.ready: set[int] = set()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data.startswith(READY):
            pid = data[len(READY) :].strip()
            if pid.isdigit():
                self.ready.add(int(pid))
            return
        self.wakes += 1
        self._wake(urgent=data == URGENT)


async def listen_for_wakes(address: str, listener: WakeListener) -> asyncio.BaseTransport:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise RuntimeError(
            f"another service uses this data dir (its dispatcher socket is taken: {exc.strerror})"
        ) from exc
    transport, _ = await loop.create_datagram_endpoint(lambda: listener, sock=sock)
    return transport


class WakeSender:
    """In another web process: tells the service's dispatcher there is work. Never blocks
    and never fails the request: a datagram lost is made up by the dispatcher's own look."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def send(self, message: bytes = WAKE) -> bool:
        try:
            self._sock.sendto(message, self.address)
        except OSError as exc:
            log.debug("could not wake the dispatcher", error=exc.strerror)
            return False
        return True

    def __call__(self, *, urgent: bool = False) -> None:
        self.send(URGENT if urgent else WAKE)


def main() -> None:
    """An extra web process: the same app, no dispatcher, on the service's port."""
    import uvicorn

    from offboarding.orchestration.prefect_tls import share_tls_contexts
    from offboarding.wiring.logging import configure_logging
    from offboarding.wiring.services import build_services
    from offboarding.wiring.settings import get_settings
    from offboarding.wiring.web import create_app

    configure_logging(level=logging.INFO)
    share_tls_contexts()
    settings = get_settings()
    sender = WakeSender(wake_address(settings.home))
    app = create_app(build_services(settings, migrate=False), dispatch=False, wake=sender)
    sock = listening_socket(settings.host, settings.port)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def serve() -> None:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started:
            sender.send(READY + str(os.getpid()).encode())
            log.info("web process serving", pid=os.getpid(), port=settings.port)
        await serving

    asyncio.run(serve())


if __name__ == "__main__":
    main()
