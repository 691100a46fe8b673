"""The DirectAdmin connector against the stateful DirectAdmin fake of `demo.panel_sandbox`
(CMD_API_* with a login key; failures as `error=1` in HTTP 200), in-process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from connectors.base import (
    DELETE,
    DISABLE,
    KEEP,
    AccessGrant,
    Leaver,
    OutcomeStatus,
    PermanentError,
    TransientError,
    UnsupportedAction,
)
from connectors.directadmin import DirectAdminConnector, from_config
from connectors.panel_common import FORWARD, FORWARD_GRANT, FTP, MAILBOX, PANEL_USER
from connectors.panel_da_api import DirectAdminError
from connectors.testing import ConnectorConformance
from demo.organisation import email_of
from demo.panel_sandbox import PRIVATE, DaState, PanelSandbox, running_panel_sandbox

LOGIN_KEY = "da-test-login-key-93fa"  # a throwaway key for a throwaway fake
LEAVER = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")
MANAGER = email_of("lsmit")


@pytest.fixture
def sandbox() -> Iterator[PanelSandbox]:
    with running_panel_sandbox(plesk_key="unused", da_key=LOGIN_KEY, serve_http=False) as running:
        yield running


@pytest.fixture
def state(sandbox: PanelSandbox) -> DaState:
    return sandbox.da_state


def build(
    sandbox: PanelSandbox, *, dry_run: bool = False, **overrides: Any
) -> DirectAdminConnector:
    config = sandbox.directadmin.connector_config(**overrides)
    return from_config(config, dry_run, transport=sandbox.directadmin.transport)


@pytest.fixture
def connector(sandbox: PanelSandbox) -> DirectAdminConnector:
    return build(sandbox)


def grant_of(connector: DirectAdminConnector, kind: str) -> AccessGrant:
    return next(g for g in connector.inventory(LEAVER) if g.kind == kind)


def revoke_all(connector: DirectAdminConnector) -> None:
    for grant in connector.inventory(LEAVER):
        if connector.capabilities.of(grant.kind).default_action != KEEP:  # type: ignore[union-attr]
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED


class TestDirectAdminConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, sandbox: PanelSandbox) -> DirectAdminConnector:
        return build(sandbox)

    @pytest.fixture
    def dry_run_connector(self, sandbox: PanelSandbox) -> DirectAdminConnector:
        return build(sandbox, dry_run=True)

    @pytest.fixture
    def leaver(self) -> Leaver:
        return LEAVER

    @pytest.fixture
    def peer_state(self, state: DaState) -> Callable[[], Any]:
        return state.snapshot

    @pytest.fixture
    def throttle_once(self, state: DaState) -> Callable[[int], None]:
        return state.throttle.once


class TestDirectAdminConformanceForwarding(TestDirectAdminConformance):
    @pytest.fixture
    def connector(self, sandbox: PanelSandbox) -> DirectAdminConnector:
        return build(sandbox, mailbox_action=FORWARD)

    @pytest.fixture
    def dry_run_connector(self, sandbox: PanelSandbox) -> DirectAdminConnector:
        return build(sandbox, dry_run=True, mailbox_action=FORWARD)


def test_inventory_lists_the_leavers_own_things_only(connector: DirectAdminConnector) -> None:
    assert [(g.kind, g.system_id) for g in connector.inventory(LEAVER)] == [
        (FORWARD_GRANT, f"jdevries@example.test>{PRIVATE}"),
        (MAILBOX, "jdevries@example.test"),
        (FTP, "jdevries@example.test"),
        (PANEL_USER, "key:jdevries-deploy"),  # not bmulder-ci, not the connector's own key
    ]


def test_mailbox_is_suspended_but_its_mail_kept(
    connector: DirectAdminConnector, state: DaState
) -> None:
    outcome = connector.revoke(grant_of(connector, MAILBOX))
    assert (outcome.status, outcome.action) == (OutcomeStatus.REVOKED, DISABLE)
    box = state.pop[LEAVER.email]
    assert (box["suspended"], box["messages"]) == ("yes", "877")  # still there, with its mail
    assert box["password"] != "old-877" and len(box["password"]) >= 20
    assert state.pop[email_of("bmulder")]["suspended"] == "no"


def test_forward_points_the_address_at_the_configured_one(
    sandbox: PanelSandbox, state: DaState
) -> None:
    connector = build(sandbox, mailbox_action=FORWARD)
    assert MANAGER in grant_of(connector, MAILBOX).label.text
    revoke_all(connector)
    assert state.forwarders[LEAVER.email] == [MANAGER]
    assert state.pop[LEAVER.email]["suspended"] == "yes"
    assert state.pop[LEAVER.email]["messages"] == "877"
    assert state.forwarders["sales@example.test"] == [LEAVER.email, email_of("bmulder")]
    assert connector.verify(LEAVER).clean


def test_keep_reports_the_mailbox_and_never_touches_it(
    sandbox: PanelSandbox, state: DaState
) -> None:
    connector = build(sandbox, mailbox_action=KEEP)
    with pytest.raises(UnsupportedAction):
        connector.revoke(grant_of(connector, MAILBOX))
    revoke_all(connector)
    assert state.pop[LEAVER.email]["suspended"] == "no"
    assert connector.verify(LEAVER).clean


def test_delete_is_never_the_default_and_only_done_when_asked(
    connector: DirectAdminConnector, state: DaState
) -> None:
    mailbox = connector.capabilities.of(MAILBOX)
    assert mailbox is not None and mailbox.default_action == DISABLE and DELETE in mailbox.actions
    assert connector.revoke(grant_of(connector, MAILBOX), DELETE).status is OutcomeStatus.REVOKED
    assert LEAVER.email not in state.pop


def test_ftp_and_login_key_removed_colleagues_kept(
    connector: DirectAdminConnector, state: DaState
) -> None:
    revoke_all(connector)
    assert LEAVER.email not in state.ftp and "backup@example.test" in state.ftp
    assert set(state.login_keys) == {"bmulder-ci", "offboarding"}
    assert LEAVER.email not in state.forwarders  # the only destination went: forwarder deleted


def test_an_error_in_a_200_answer_is_an_error_not_success(
    connector: DirectAdminConnector, state: DaState
) -> None:
    grant = grant_of(connector, MAILBOX)
    state.fail_next["CMD_API_POP"] = ("Unable to modify email account", "quota file is locked")
    with pytest.raises(DirectAdminError) as raised:
        connector.revoke(grant)
    assert "CMD_API_POP" in str(raised.value)
    assert "Unable to modify email account: quota file is locked" in str(raised.value)
    assert state.pop[LEAVER.email]["suspended"] == "no"
    assert grant in connector.verify(LEAVER).remaining


def test_a_command_the_login_key_does_not_allow_says_which(
    connector: DirectAdminConnector, state: DaState
) -> None:
    state.allowed.discard("CMD_API_FTP")
    with pytest.raises(DirectAdminError, match="allow CMD_API_FTP on the login key"):
        connector.inventory(LEAVER)
    health = connector.check()
    assert not health.ok and "Cannot Execute Your Request" in health.messages[0]


def test_the_json_answer_shape_is_read_too(
    connector: DirectAdminConnector, sandbox: PanelSandbox
) -> None:
    with connector.api.session() as client:
        answer = client.get(
            "CMD_API_POP", params={"action": "bogus", "domain": "example.test", "json": "yes"}
        )
        assert answer.status_code == 200 and answer.json()["error"] == "1"
        with pytest.raises(DirectAdminError, match="Unknown action: bogus"):
            connector.api._answer("CMD_API_POP", answer)
        listed = client.get("CMD_API_SHOW_DOMAINS", params={"json": "yes"})
        assert connector.api._answer("CMD_API_SHOW_DOMAINS", listed)


def test_wrong_login_key_check_names_host_and_what_to_fix(sandbox: PanelSandbox) -> None:
    connector = build(sandbox, login_key="not-the-key")
    health = connector.check()
    assert not health.ok
    first = health.messages[0]
    assert sandbox.directadmin.base_url in first and "HTTP 401" in first
    assert "login_key" in first and "CMD_API_POP" in first and "Invalid login" in first
    assert "not-the-key" not in repr(health)
    with pytest.raises(PermanentError) as raised:
        connector.inventory(LEAVER)
    assert not isinstance(raised.value, TransientError)


def test_an_html_page_instead_of_the_api_says_what_to_fix(sandbox: PanelSandbox) -> None:
    connector = build(sandbox, base_url=sandbox.directadmin.base_url + "/login")
    with pytest.raises(PermanentError, match="HTML page, not the API"):
        connector.inventory(LEAVER)


def test_passwords_never_reach_the_logs(
    connector: DirectAdminConnector, state: DaState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        revoke_all(connector)
    logged = repr(events) + caplog.text
    assert any(e.get("event") == "grant revoked" for e in events)
    assert state.pop[LEAVER.email]["password"] not in logged and LOGIN_KEY not in logged


def test_the_sandbox_over_http() -> None:
    with running_panel_sandbox(plesk_key="x", da_key=LOGIN_KEY) as served:
        connector = from_config(served.directadmin.connector_config(), False)
        assert connector.check().ok
        assert len(connector.inventory(LEAVER)) == 4
        response = httpx.get(f"{served.directadmin.base_url}/CMD_API_POP", auth=("x", "y"))
        assert response.status_code == 401 and "error=1" in response.text
