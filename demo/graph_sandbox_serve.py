"""The Graph sandbox on the wire: an ASGI app, an in-process httpx transport, the demo seed,
and HTTPS on 127.0.0.1 with a throwaway CA.

- `asgi_app(tenant)`: the tenant (`demo.graph_sandbox.GraphTenant`) as an ASGI app, with an
  optional injected latency per request;
- `SandboxTransport(app)`: a synchronous httpx transport that calls the ASGI app in
  process (httpx's own ASGITransport is async only), so the connector's real httpx and
  MSAL code paths run unchanged in tests;
- `seed_demo_tenant(tenant)`: the demo organisation, with Jan de Vries (E1042) holding one
  grant of every kind;
- `running_graph_sandbox()`: served over HTTPS by uvicorn in a thread, certificate from a
  CA made with `cryptography` for this run; yields a `GraphSandbox` whose
  `connector_config()` points the Entra connector at it (tenant "sandbox").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from demo.graph_sandbox import GraphTenant
from demo.organisation import EMPLOYEES, LEAVER_ID, email_of

NAME = "Microsoft Entra ID (sandbox)"
TENANT = "sandbox"
CLIENT_ID = "0f1e2d3c-offboarding-sandbox-app"
ALL_PERMISSIONS = {
    "User.Read.All",
    "User.EnableDisableAccount.All",
    "User.RevokeSessions.All",
    "GroupMember.Read.All",
    "GroupMember.ReadWrite.All",
    "Directory.Read.All",
    "AppRoleAssignment.ReadWrite.All",
    "UserAuthenticationMethod.ReadWrite.All",
    "Device.Read.All",
    "LicenseAssignment.ReadWrite.All",
}
Asgi = Any


def asgi_app(tenant: GraphTenant, latency: list[float] | None = None) -> Asgi:
    """`latency` is a one-element list (seconds), so a benchmark can change it while running."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if latency and latency[0]:
            await asyncio.sleep(latency[0])
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        reply = tenant.handle(
            scope["method"], scope["path"], scope["query_string"].decode(), headers, body
        )
        content = b"" if reply.body is None else json.dumps(reply.body).encode()
        out = [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        if content:
            out.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": content})

    return app


class SandboxTransport(httpx.BaseTransport):
    """Calls an ASGI app synchronously, in process (one short event loop per request)."""

    def __init__(self, app: Asgi) -> None:
        self._inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        inner_request = httpx.Request(
            request.method, request.url, headers=request.headers, content=content
        )

        async def call() -> tuple[int, httpx.Headers, bytes]:
            response = await self._inner.handle_async_request(inner_request)
            return response.status_code, response.headers, await response.aread()

        status, headers, body = asyncio.run(call())
        return httpx.Response(status, headers=headers, content=body, request=request)


@dataclass(frozen=True)
class DemoTenant:
    leaver_id: str  # Graph object id of Jan de Vries
    leaver_upn: str
    groups: dict[str, str]  # displayName -> id


def seed_demo_tenant(tenant: GraphTenant, *, synced_leaver: bool = False) -> DemoTenant:
    """The demo organisation; the leaver holds one grant of every kind."""
    data = tenant.data
    ids = {
        uid: data.add_user(
            email_of(uid), f"{given} {sn}", eid, synced=synced_leaver and eid == LEAVER_ID
        )
        for eid, uid, given, sn, *_ in EMPLOYEES
    }
    leaver = next(ids[uid] for eid, uid, *_ in EMPLOYEES if eid == LEAVER_ID)
    e3, ems = data.add_sku("ENTERPRISEPACK"), data.add_sku("EMS")
    colleagues = [ids["ddeboer"], ids["bmulder"]]
    groups = {
        "Engineering": data.add_group("Engineering", [leaver, *colleagues]),
        "Project Apollo": data.add_group(
            "Project Apollo",
            [leaver, ids["lsmit"]],
            unified=True,
            mail_enabled=True,
            security=False,
        ),
        "All Engineering (dynamic)": data.add_group(
            "All Engineering (dynamic)", [leaver, *colleagues], dynamic=True
        ),
        "VPN Users (AD)": data.add_group("VPN Users (AD)", [leaver, ids["evisser"]], synced=True),
        "engineering-list": data.add_group(
            "engineering-list", [leaver, *colleagues], mail_enabled=True, security=False
        ),
        "Licence - EMS": data.add_group("Licence - EMS", [leaver, ids["lsmit"]], licences=[ems]),
    }
    data.assign_licence(leaver, e3)
    data.add_app_role(leaver, "Salesforce")
    data.add_app_role(leaver, "GitHub Enterprise")
    data.add_method(
        leaver,
        "#microsoft.graph.microsoftAuthenticatorAuthenticationMethod",
        default_as="push",
        displayName="iPhone van Jan",
        deviceTag="SoftwareTokenActivated",
    )
    data.add_method(
        leaver,
        "#microsoft.graph.phoneAuthenticationMethod",
        phoneNumber="+31 612345678",
        phoneType="mobile",
        smsSignInState="notSupported",
    )
    data.add_method(
        leaver,
        "#microsoft.graph.fido2AuthenticationMethod",
        displayName="YubiKey 5",
        model="YubiKey 5 NFC",
    )
    data.add_device(leaver, "JDV-LAPTOP", "Windows")
    return DemoTenant(leaver, email_of("jdevries"), groups)


# -- HTTPS on loopback ---------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSandbox:
    """The running sandbox: where it is, the app's secret, and the tenant's state."""

    base_url: str  # the Graph root, .../v1.0
    authority_host: str
    ca_file: Path
    client_id: str
    client_secret: str = field(repr=False)
    tenant: GraphTenant = field(repr=False)
    seed: DemoTenant = field(repr=False)

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        """A `kind: entra` connector config for this sandbox."""
        return {
            "name": NAME,
            "kind": "entra",
            "base_url": self.base_url,
            "authority_host": self.authority_host,
            "tenant_id": TENANT,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "ca_file": str(self.ca_file),
            **overrides,
        }


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA for this run and a server certificate for 127.0.0.1 and localhost it signed:
    (ca.pem, server.pem, server-key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offboarding sandbox CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


@contextmanager
def running_graph_sandbox(
    *, token_lifetime: int = 3599, synced_leaver: bool = False
) -> Iterator[GraphSandbox]:
    """Seed a tenant and serve it over HTTPS on 127.0.0.1; stopped on exit. With
    `synced_leaver` the leaver is synced from on-premises AD (a hybrid leaver)."""
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="graph-sandbox-") as tmp:
        ca_file, cert, key = make_certificates(Path(tmp))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        origin = f"https://127.0.0.1:{port}"
        tenant = GraphTenant(tenant_id=TENANT, token_lifetime=token_lifetime, issuer_host=origin)
        secret = secrets.token_urlsafe(24)
        tenant.register_app(CLIENT_ID, ALL_PERMISSIONS, secret=secret)
        seed = seed_demo_tenant(tenant, synced_leaver=synced_leaver)
        config = uvicorn.Config(
            asgi_app(tenant),
            log_level="warning",
            lifespan="off",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the Graph sandbox did not start within 10 s")
            time.sleep(0.01)
        try:
            yield GraphSandbox(f"{origin}/v1.0", origin, ca_file, CLIENT_ID, secret, tenant, seed)
        finally:
            server.should_exit = True
            thread.join(timeout=5)
            sock.close()
