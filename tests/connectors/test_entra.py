"""The Entra ID connector against the stateful Graph sandbox (`demo.graph_sandbox`).

The real msal and httpx code paths run: the sandbox is plugged in at the HTTP layer (an
in-process transport over its ASGI app, and once over HTTPS with its throwaway CA).
Assertions look at the sandbox's state and its request log, not at call counts.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from connectors.base import (
    ELSEWHERE,
    KEEP,
    MANUAL,
    REMOVE,
    Leaver,
    OutcomeStatus,
    PermanentError,
)
from connectors.entra import EntraConnector, from_config
from connectors.entra_access import CAPABILITIES
from connectors.testing import ConnectorConformance, in_plan_order, sent
from demo.graph_sandbox import GraphTenant
from demo.graph_sandbox_serve import (
    ALL_PERMISSIONS,
    DemoTenant,
    SandboxTransport,
    asgi_app,
    running_graph_sandbox,
    seed_demo_tenant,
)

SECRET = "sandbox-secret-value-Zq8~do-not-log"
APP = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def tenant() -> GraphTenant:
    graph = GraphTenant()
    graph.register_app(APP, ALL_PERMISSIONS, secret=SECRET)
    return graph


@pytest.fixture
def seed(tenant: GraphTenant) -> DemoTenant:
    return seed_demo_tenant(tenant)


@pytest.fixture
def transport(tenant: GraphTenant) -> SandboxTransport:
    return SandboxTransport(asgi_app(tenant))


def config(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "entra",
        "kind": "entra",
        "tenant_id": "sandbox",
        "client_id": APP,
        "client_secret": SECRET,
        "retry_budget_seconds": 10,
        **overrides,
    }


def build(transport: SandboxTransport, dry_run: bool = False, **overrides: Any) -> EntraConnector:
    return from_config(config(**overrides), dry_run, transport=transport)


@pytest.fixture
def leaver(seed: DemoTenant) -> Leaver:
    return Leaver(employee_id="E1042", email=seed.leaver_upn, display_name="Jan de Vries")


def state_of(tenant: GraphTenant) -> str:
    return json.dumps(asdict(tenant.data), sort_keys=True, default=sorted)


def groups_of(tenant: GraphTenant, user_id: str) -> set[str]:
    data = tenant.data
    return {data.groups[g]["displayName"] for g, m in data.members.items() if user_id in m}


class TestEntraConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, transport: SandboxTransport, seed: DemoTenant) -> EntraConnector:
        return build(transport)

    @pytest.fixture
    def dry_run_connector(self, transport: SandboxTransport, seed: DemoTenant) -> EntraConnector:
        return build(transport, dry_run=True)

    @pytest.fixture
    def leaver(self, seed: DemoTenant) -> Leaver:
        return Leaver(employee_id="E1042", email=seed.leaver_upn, display_name="Jan de Vries")

    @pytest.fixture
    def peer_state(self, tenant: GraphTenant) -> Callable[[], Any]:
        return lambda: state_of(tenant)

    @pytest.fixture
    def throttle_once(self, tenant: GraphTenant) -> Callable[[int], None]:
        return tenant.throttle_next


class TestEntraConformanceByEmployeeId(TestEntraConformance):
    @pytest.fixture
    def connector(self, transport: SandboxTransport, seed: DemoTenant) -> EntraConnector:
        return build(transport, match_attribute="employeeId", match_value="employee_id")


def test_each_group_kind_is_shown_right_and_only_plain_groups_are_removed(
    transport: SandboxTransport, tenant: GraphTenant, seed: DemoTenant, leaver: Leaver
) -> None:
    connector = build(transport)
    grants = {g.target: g for g in connector.inventory(leaver) if g.kind.endswith("group")}
    actions = {t: CAPABILITIES.action_for("entra", g, None) for t, g in grants.items()}
    assert actions == {
        "Engineering": REMOVE,
        "Project Apollo": REMOVE,
        "Licence - EMS": REMOVE,
        "All Engineering (dynamic)": MANUAL,
        "VPN Users (AD)": ELSEWHERE,
        "engineering-list": MANUAL,
    }
    assert (
        "change the rule or the user's attributes" in grants["All Engineering (dynamic)"].label.text
    )
    assert "handled by AD" in grants["VPN Users (AD)"].label.text
    assert "change in Exchange" in grants["engineering-list"].label.text
    licence = next(g for g in connector.inventory(leaver) if g.kind == "group-licence")
    assert CAPABILITIES.action_for("entra", licence, None) == KEEP
    assert "goes with group Licence - EMS" in licence.label.text
    for grant in in_plan_order(sent(connector, connector.inventory(leaver))):
        assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert groups_of(tenant, seed.leaver_id) == {
        "All Engineering (dynamic)",
        "VPN Users (AD)",
        "engineering-list",
    }
    user = tenant.data.user_view(seed.leaver_id)
    assert user["accountEnabled"] is False and user["assignedLicenses"] == []
    assert [m["@odata.type"] for m in tenant.data.methods[seed.leaver_id]] == [
        "#microsoft.graph.passwordAuthenticationMethod"
    ]
    assert not [a for a in tenant.data.app_roles.values() if a["principalId"] == seed.leaver_id]


def test_a_synced_user_is_disabled_in_ad_not_here(
    tenant: GraphTenant, transport: SandboxTransport
) -> None:
    seed = seed_demo_tenant(tenant, synced_leaver=True)
    leaver = Leaver(employee_id="E1042", email=seed.leaver_upn, display_name="Jan de Vries")
    connector = build(transport)
    account = next(g for g in connector.inventory(leaver) if g.effect.value == "sign_in")
    assert account.kind == "synced-account"
    assert CAPABILITIES.action_for("entra", account, None) == ELSEWHERE
    for grant in in_plan_order(sent(connector, connector.inventory(leaver))):
        assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert tenant.data.users[seed.leaver_id]["accountEnabled"] is True  # AD's to change
    assert tenant.data.users[seed.leaver_id]["signInSessionsValidFromDateTime"] > "2025"
    verification = connector.verify(leaver)
    assert verification.clean, verification


def make_certificate(tmp_path: Path) -> tuple[str, str, str, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "offboarding-entra-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    both = tmp_path / "app.pem"
    both.write_text(key_pem + cert_pem)
    return key_pem, cert.fingerprint(hashes.SHA1()).hex(), cert_pem, both


def test_certificate_auth_with_thumbprint_and_with_a_pem_file(
    tenant: GraphTenant,
    transport: SandboxTransport,
    seed: DemoTenant,
    leaver: Leaver,
    tmp_path: Path,
) -> None:
    key_pem, thumbprint, cert_pem, both = make_certificate(tmp_path)
    tenant.register_app(
        APP, ALL_PERMISSIONS, certificate=x509.load_pem_x509_certificate(cert_pem.encode())
    )
    by_thumbprint = build(
        transport, client_secret=None, certificate_key=key_pem, certificate_thumbprint=thumbprint
    )
    assert by_thumbprint.inventory(leaver)
    by_file = build(transport, client_secret=None, certificate_file=str(both))
    assert by_file.inventory(leaver)
    tokens = [r for r in tenant.requests if r.path.endswith("/oauth2/v2.0/token")]
    assert [r.status for r in tokens] == [200, 200]

    other_key, other_thumbprint, *_ = make_certificate(tmp_path)
    with pytest.raises(PermanentError) as refused:
        build(
            transport,
            client_secret=None,
            certificate_key=other_key,
            certificate_thumbprint=other_thumbprint,
        ).inventory(leaver)
    assert "AADSTS700027" in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)


def test_a_token_that_expires_mid_run_is_renewed_once(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    connector = build(transport)
    group = next(g for g in connector.inventory(leaver) if g.target == "Engineering")
    tenant.expire_tokens()
    assert connector.revoke(group).status is OutcomeStatus.REVOKED
    assert "Engineering" not in groups_of(tenant, seed.leaver_id)
    statuses = [(r.path.rsplit("/", 1)[-1], r.status) for r in tenant.requests]
    assert statuses.count(("token", 200)) == 2
    assert ("$ref", 401) in statuses and ("$ref", 204) in statuses


def test_a_missing_permission_names_the_one_to_grant(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    tenant.register_app(APP, ALL_PERMISSIONS - {"GroupMember.ReadWrite.All"}, secret=SECRET)
    connector = build(transport)
    assert connector.check().ok
    group = next(g for g in connector.inventory(leaver) if g.target == "Engineering")
    with pytest.raises(PermanentError, match=r"lacks .*GroupMember\.ReadWrite\.All"):
        connector.revoke(group)
    assert "Engineering" in groups_of(tenant, seed.leaver_id)
    tenant.register_app(
        APP, ALL_PERMISSIONS - {"UserAuthenticationMethod.ReadWrite.All"}, secret=SECRET
    )
    with pytest.raises(PermanentError, match=r"UserAuthenticationMethod\.Read\.All"):
        connector.inventory(leaver)
    health = connector.check()
    assert not health.ok
    assert any("UserAuthenticationMethod.Read.All" in m for m in health.messages), health


def test_a_refused_secret_gives_the_aadsts_code_and_never_the_secret(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    tenant.register_app(APP, ALL_PERMISSIONS, secret="another-value")
    with capture_logs() as logs, pytest.raises(PermanentError) as refused:
        build(transport).inventory(leaver)
    assert "AADSTS7000215" in str(refused.value) and "client secret" in str(refused.value)
    assert SECRET not in str(refused.value) and SECRET not in repr(logs)


def test_batch_items_answered_429_are_sent_again_only_after_retry_after(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    for n in range(40):  # three $batch chunks: nothing may follow a throttled chunk early
        tenant.data.add_group(f"project-{n:02}", [seed.leaver_id])
    connector = build(transport)
    grants = connector.inventory(leaver)
    tenant.throttle_batch_items(retry_after=2, count=3)
    outcomes = connector.revoke_many(grants)
    assert {o.status for o in outcomes} == {OutcomeStatus.REVOKED}
    assert groups_of(tenant, seed.leaver_id) == {
        "All Engineering (dynamic)",
        "VPN Users (AD)",
        "engineering-list",
    }
    throttled = [r for r in tenant.requests if r.in_batch and r.status == 429]
    assert len(throttled) == 3
    later = [r for r in tenant.requests if r.at > throttled[-1].at]
    assert later and min(r.at for r in later) >= throttled[-1].at + 2
    assert tenant.early_requests == 0
    assert connector.verify(leaver).clean


def test_the_default_method_goes_last_whatever_the_order(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    connector = build(transport)
    methods = [g for g in connector.inventory(leaver) if "auth-method" in g.kind]
    default = next(g for g in methods if g.kind == "default-auth-method")
    assert connector.revoke(default).status is OutcomeStatus.REVOKED
    assert len(tenant.data.methods[seed.leaver_id]) == 1  # the password only
    others = [g for g in methods if g is not default]
    assert {connector.revoke(g).status for g in others} == {OutcomeStatus.ALREADY_DONE}


def test_a_quote_in_the_matched_value_is_escaped(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant
) -> None:
    tenant.data.add_user("o'brien@example.test", "Sean O'Brien", "E2000")
    leaver = Leaver(employee_id="E2000", email="o'brien@example.test", display_name="Sean")
    grants = build(transport).inventory(leaver)
    assert [g.kind for g in grants if g.kind == "account"] == ["account"]


def test_memberships_past_one_page_are_all_found(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    for n in range(130):
        tenant.data.add_group(f"team-{n:03}", [seed.leaver_id])
    groups = [g for g in build(transport).inventory(leaver) if g.kind == "group"]
    assert len(groups) == 133


def test_secrets_and_tokens_never_reach_the_logs(
    tenant: GraphTenant, transport: SandboxTransport, seed: DemoTenant, leaver: Leaver
) -> None:
    connector = build(transport)
    with capture_logs() as logs:
        for grant in in_plan_order(sent(connector, connector.inventory(leaver))):
            connector.revoke(grant)
        tenant.expire_tokens()
        connector.verify(leaver)
    tokens = list(tenant._tokens)
    assert len(tokens) == 2
    text = repr(logs)
    assert SECRET not in text and not any(t in text for t in tokens)
    assert SECRET not in repr(connector.config)


def test_the_sandbox_served_over_https_with_its_own_ca() -> None:
    with running_graph_sandbox() as sandbox:
        connector = from_config(sandbox.connector_config(), False)
        leaver = Leaver(employee_id="E1042", email=sandbox.seed.leaver_upn, display_name="Jan")
        assert connector.check().ok
        grants = connector.inventory(leaver)
        assert {g.kind for g in grants} >= {"account", "group", "auth-method", "licence"}
        assert sandbox.client_secret not in repr(sandbox)
