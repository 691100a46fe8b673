"""The GitHub connector against the GitHub sandbox (`demo.github_sandbox`), in process.

Every request the connector sends and every answer the sandbox gives goes through
`ValidatingTransport`: it is checked against GitHub's own OpenAPI description
(`tests/connectors/github_openapi.py`), so a wrong path, verb, parameter or body fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from structlog.testing import capture_logs

from connectors import github_client
from connectors.base import (
    Leaver,
    OutcomeStatus,
    PermanentError,
    TransientError,
    UnsupportedAction,
)
from connectors.github import (
    CREDENTIAL,
    ORGANIZATION,
    REPOSITORY,
    TEAM,
    UNMAPPED,
    GitHubConnector,
    from_config,
)
from connectors.testing import ConnectorConformance
from demo.github_sandbox import LOGINS, App, GitHubSandbox, running_github_sandbox, seed_demo
from demo.github_sandbox_api import GitHubOrg
from tests.connectors.github_openapi import (
    OpenAPIMismatch,
    ValidatingTransport,
    check_response,
    oracle,
)

TOKEN = "github_pat_test_0123456789abcdefghij"
JAN = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")
ORG = "acme-nl"


@pytest.fixture
def sandbox() -> GitHubSandbox:
    return GitHubSandbox(org=seed_demo(GitHubOrg()), tokens={TOKEN: True})


@pytest.fixture
def wire(sandbox: GitHubSandbox) -> Iterator[ValidatingTransport]:
    transport = ValidatingTransport(sandbox.transport())
    yield transport
    assert transport.mismatches == [], transport.mismatches


@pytest.fixture
def make(wire: ValidatingTransport) -> Callable[..., GitHubConnector]:
    def build(dry_run: bool = False, **changes: Any) -> GitHubConnector:
        config = {
            "name": "github",
            "kind": "github",
            "base_url": "http://127.0.0.1:9",
            "organization": ORG,
            "token": TOKEN,
            "logins": dict(LOGINS),
            "saml_sso": True,
            "retry_budget_seconds": 5,
            **changes,
        }
        return from_config(config, dry_run, transport=wire)

    return build


def writes(sandbox: GitHubSandbox) -> list[str]:
    return [f"{s.method} {s.path}" for s in sandbox.seen if s.method != "GET"]


class TestGitHubConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, make: Callable[..., GitHubConnector]) -> GitHubConnector:
        return make()

    @pytest.fixture
    def dry_run_connector(self, make: Callable[..., GitHubConnector]) -> GitHubConnector:
        return make(dry_run=True)

    @pytest.fixture
    def leaver(self) -> Leaver:
        return JAN

    @pytest.fixture
    def peer_state(self, sandbox: GitHubSandbox) -> Callable[[], Any]:
        return sandbox.org.state

    @pytest.fixture
    def throttle_once(self, sandbox: GitHubSandbox) -> Callable[[int], None]:
        return lambda seconds: sandbox.throttle(429, retry_after=seconds)

    @pytest.fixture
    def expects_cascades(self) -> bool:
        return True


# -- what the inventory finds -------------------------------------------------------------


def test_inventory_of_the_demo_leaver(make: Callable[..., GitHubConnector]) -> None:
    grants = make().inventory(JAN)
    assert [(g.kind, g.label.text) for g in grants] == [
        (TEAM, "Member of team Backend"),
        (TEAM, "Member of team Platform"),
        (REPOSITORY, "Collaborator on acme-nl/legacy-portal (admin)"),
        (CREDENTIAL, "SSO-authorised personal access token jdevries-acme's personal access token"),
        (CREDENTIAL, "SSO-authorised SSH key jdevries-acme's SSH key"),
        (ORGANIZATION, "Member of acme-nl (member)"),
    ]
    org = grants[-1]
    assert all(g.cascades_from == org.key for g in grants if g.kind in (TEAM, REPOSITORY))
    assert all(g.cascades_from is None for g in grants if g.kind in (CREDENTIAL, ORGANIZATION))


def test_team_memberships_go_with_the_organisation(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    connector = make()
    org = next(g for g in connector.inventory(JAN) if g.kind == ORGANIZATION)
    assert connector.revoke(org).status is OutcomeStatus.REVOKED
    assert writes(sandbox) == [f"DELETE /orgs/{ORG}/memberships/jdevries-acme"]  # sent once
    teams = sandbox.org.state()["teams"]
    assert all("jdevries-acme" not in members for members in teams.values())
    assert "jdevries-acme" not in sandbox.org.repos["legacy-portal"].collaborators
    assert {g.kind for g in connector.inventory(JAN)} == {CREDENTIAL}


def test_pending_invitation_is_shown_and_cancelled(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    sandbox.org.invite("nieuw-acme", teams=("backend",))
    leaver = Leaver(employee_id="E1003", email="evisser@example.test", display_name="Emma")
    connector = make(logins={"E1003": "nieuw-acme"})
    grants = connector.inventory(leaver)
    assert [(g.kind, g.label.text) for g in grants] == [
        (TEAM, "Invited to team Backend"),
        (ORGANIZATION, "Invited to acme-nl (pending)"),
    ]
    assert connector.revoke(grants[-1]).status is OutcomeStatus.REVOKED
    assert "nieuw-acme" not in sandbox.org.invitations
    assert connector.inventory(leaver) == []
    assert connector.verify(leaver).clean


def test_outside_collaborator_is_removed(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    contractor = Leaver(employee_id="E1014", email="fbrouwer@example.test", display_name="Finn")
    connector = make(logins={"E1014": "kpietersen-ext"})
    [grant] = connector.inventory(contractor)
    assert (grant.kind, grant.cascades_from) == (REPOSITORY, None)
    assert grant.label.text == "Outside collaborator on acme-nl/legacy-portal (write)"
    assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert "kpietersen-ext" not in sandbox.org.repos["legacy-portal"].collaborators
    assert connector.revoke(grant).status is OutcomeStatus.ALREADY_DONE
    assert connector.verify(contractor).clean


def test_repository_invitation_is_cancelled(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    invitation = sandbox.org.invite_to_repo("webshop", "jdevries-acme", "read")
    connector = make()
    grant = next(g for g in connector.inventory(JAN) if g.kind == "repository-invitation")
    assert grant.label.text == "Invited to acme-nl/webshop (read, pending)"
    assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert invitation not in sandbox.org.repos["webshop"].invitations


def test_sso_credentials_are_revoked(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    connector = make()
    credentials = [g for g in connector.inventory(JAN) if g.kind == CREDENTIAL]
    for grant in credentials:
        assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert [c.login for c in sandbox.org.credentials.values()] == ["bmulder-acme"]
    checks = {c.name.text: c.passed for c in connector.verify(JAN).checks}
    assert checks["no SSO-authorised credentials"] is True
    assert checks["not a member of the organisation"] is False


# -- a login that is missing or in doubt -------------------------------------------------------


def test_unmapped_leaver_with_require_mapping_is_a_manual_step(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    someone = Leaver(employee_id="E1003", email="evisser@example.test", display_name="Emma")
    connector = make(require_mapping=True)
    [grant] = connector.inventory(someone)
    assert grant.kind == UNMAPPED and grant.label.id == "github.grant.unmapped"
    assert grant.label.text.startswith("manual: not mapped")
    with pytest.raises(UnsupportedAction):
        connector.revoke(grant)
    assert connector.verify(someone).remaining == []
    assert sandbox.seen == []  # nothing asked, nothing sent
    assert make().inventory(someone) == []  # without require_mapping: nothing here


def test_ambiguous_login_from_email_is_a_manual_step(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    before = sandbox.org.state()
    someone = Leaver(employee_id="E2000", email="bmulder-acme@example.test", display_name="B")
    [grant] = make(login_from_email=True).inventory(someone)
    assert grant.kind == UNMAPPED and grant.label.id == "github.grant.ambiguous"
    assert "E1006" in grant.label.text
    assert writes(sandbox) == [] and sandbox.org.state() == before


def test_mapped_login_that_github_does_not_know_is_a_manual_step(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    [grant] = make(logins={"E1042": "no-such-login"}).inventory(JAN)
    assert grant.kind == UNMAPPED
    assert grant.label.text == "manual: the mapped login no-such-login does not exist on GitHub"
    assert [f"{s.method} {s.path} {s.status}" for s in sandbox.seen] == [
        "GET /users/no-such-login 404"
    ]


def test_login_from_email_when_enabled(make: Callable[..., GitHubConnector]) -> None:
    someone = Leaver(employee_id="E9", email="jdevries-acme@example.test", display_name="J")
    assert make(logins={}, login_from_email=True).inventory(someone)
    assert make(logins={}).inventory(someone) == []


# -- rate limits --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_is_honoured(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox, status: int
) -> None:
    connector = make()
    expected = connector.inventory(JAN)
    sandbox.throttle(status, retry_after=1)
    started = time.monotonic()
    assert connector.inventory(JAN) == expected
    assert time.monotonic() - started >= 1
    assert sandbox.early_requests == 0
    assert [s.status for s in sandbox.seen].count(status) == 1


def test_primary_rate_limit_remaining_zero_waits_for_the_reset(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    connector = make()
    expected = connector.inventory(JAN)
    sandbox.exhaust_primary(after=2, reset_in=1)
    assert connector.inventory(JAN) == expected
    assert sandbox.early_requests == 0
    assert 403 not in [s.status for s in sandbox.seen]  # waited before sending, not refused


def test_primary_rate_limit_403_waits_for_the_reset(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    connector = make()
    expected = connector.inventory(JAN)
    sandbox.exhaust_primary(after=0, reset_in=1)
    assert connector.inventory(JAN) == expected
    assert sandbox.early_requests == 0
    assert [s.status for s in sandbox.seen].count(403) == 1


def test_a_wait_past_the_budget_goes_to_the_flow(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    sandbox.throttle(403, retry_after=60)
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        make().inventory(JAN)
    assert time.monotonic() - started < 1
    assert raised.value.retry_after == 60 and len(sandbox.seen) == 1


# -- credentials ---------------------------------------------------------------------------


def test_token_is_never_logged(
    make: Callable[..., GitHubConnector],
    sandbox: GitHubSandbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    connector = make()
    with capture_logs() as logs:
        for grant in connector.inventory(JAN):
            connector.revoke(grant)
        connector.verify(JAN)
        sandbox.throttle(429, retry_after=60)
        with pytest.raises(TransientError) as raised:
            connector.inventory(JAN)
    assert logs and any(e["event"] == "http write" for e in logs)
    text = repr(logs) + caplog.text + str(raised.value) + repr(connector.config)
    assert TOKEN not in text
    bad = make(token="github_pat_wrong_token_value")
    with pytest.raises(PermanentError) as refused:
        bad.inventory(JAN)
    assert "HTTP 401" in str(refused.value) and "github_pat_wrong" not in str(refused.value)


def test_missing_permission_is_a_clear_permanent_error(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox
) -> None:
    sandbox.tokens[TOKEN] = False  # may read, not write
    connector = make()
    org = next(g for g in connector.inventory(JAN) if g.kind == ORGANIZATION)
    with pytest.raises(PermanentError, match="Members") as raised:
        connector.revoke(org)
    assert "Resource not accessible" in str(raised.value)
    assert "jdevries-acme" in sandbox.org.members


@pytest.fixture
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _app_config(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {"token": None, "app_id": "12345", "private_key": pem, "installation_id": 777}


@pytest.mark.parametrize(("lifetime", "mints"), [(3600, 1), (200, 2)])
def test_github_app_installation_token(
    make: Callable[..., GitHubConnector],
    sandbox: GitHubSandbox,
    app_key: rsa.RSAPrivateKey,
    lifetime: int,
    mints: int,
) -> None:
    public = app_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sandbox.app = App(12345, public, 777, token_seconds=lifetime)
    sandbox.tokens.clear()
    connector = make(dry_run=True, **_app_config(app_key))  # minting is no write
    first = connector.inventory(JAN)
    assert connector.inventory(JAN) == first and len(first) == 6
    assert len(sandbox.minted) == mints  # kept until five minutes before it expires
    posts = [s for s in sandbox.seen if s.method == "POST"]
    assert [s.path for s in posts] == ["/app/installations/777/access_tokens"] * mints
    assert all(s.status == 201 for s in posts)


def test_github_app_with_the_wrong_key_is_refused(
    make: Callable[..., GitHubConnector], sandbox: GitHubSandbox, app_key: rsa.RSAPrivateKey
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    public = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sandbox.app = App(12345, public, 777)
    with pytest.raises(PermanentError, match="mint an installation token"):
        make(**_app_config(app_key)).inventory(JAN)


def test_config_needs_one_way_to_authenticate(make: Callable[..., GitHubConnector]) -> None:
    with pytest.raises(ValueError, match="not both"):
        make(app_id="1", private_key="k", installation_id=2)
    with pytest.raises(ValueError, match="set token"):
        make(token=None)
    with pytest.raises(ValueError, match="maps both"):
        make(logins={"E1": "same", "E2": "Same"})


# -- paging, the validator, and the served sandbox ---------------------------------------------


def test_lists_are_followed_through_the_link_header(
    make: Callable[..., GitHubConnector], monkeypatch: pytest.MonkeyPatch, sandbox: GitHubSandbox
) -> None:
    expected = make().inventory(JAN)
    monkeypatch.setattr(github_client, "PAGE_SIZE", 1)
    sandbox.seen.clear()
    assert make().inventory(JAN) == expected
    assert any("page=" in str(s.path) or s.path.endswith("/repos") for s in sandbox.seen)
    assert len(sandbox.seen) > len(expected) + 10


def test_a_wrong_request_is_caught_by_the_openapi_validator(sandbox: GitHubSandbox) -> None:
    wire = ValidatingTransport(sandbox.transport())
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url="http://127.0.0.1:9", transport=wire, headers=headers) as client:
        with pytest.raises(OpenAPIMismatch, match="OperationNotFound"):
            client.post(f"/orgs/{ORG}/memberships/jdevries-acme")  # wrong verb
        with pytest.raises(OpenAPIMismatch, match="PathNotFound"):
            client.delete(f"/orgs/{ORG}/team/backend/members/jdevries-acme")  # wrong path
        with pytest.raises(OpenAPIMismatch):
            client.get(f"/orgs/{ORG}/repos", params={"type": "everything"})  # wrong parameter
        assert client.get(f"/orgs/{ORG}/repos").status_code == 200
    assert len(wire.mismatches) == 3
    assert sandbox.seen[-1].path == f"/orgs/{ORG}/repos" and len(sandbox.seen) == 1


def test_a_wrong_answer_is_caught_by_the_openapi_validator() -> None:
    request = httpx.Request("GET", f"https://api.github.com/orgs/{ORG}/memberships/x")
    incomplete = httpx.Response(200, json={"state": "active"}, request=request)
    with pytest.raises(OpenAPIMismatch):
        check_response(request, incomplete)
    not_an_error = httpx.Response(429, json={"message": 5}, request=request)
    with pytest.raises(OpenAPIMismatch, match="not a GitHub error body"):
        check_response(request, not_an_error)


def test_the_validator_is_built_once_and_quickly() -> None:
    first = oracle()
    assert oracle() is first
    print(f"openapi: load {first.load_seconds:.2f} s, prune+build {first.build_seconds:.2f} s")
    assert first.load_seconds + first.build_seconds < 20
    assert len(first.spec["paths"]) < 20  # pruned to what is used


def test_the_served_sandbox_over_http() -> None:
    with running_github_sandbox() as running:
        wire = ValidatingTransport(httpx.HTTPTransport())
        connector = from_config(running.connector_config(), False, transport=wire)
        assert connector.check().ok
        grants = connector.inventory(JAN)
        assert len(grants) == 6 and connector.name == "GitHub (sandbox)"
        assert running.token not in repr(running)
        assert wire.mismatches == [] and wire.checked >= 6
