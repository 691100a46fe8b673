"""The Plesk connector against the stateful Plesk fake of `demo.panel_sandbox` (REST API v2
and the CLI gateway, as Plesk documents them), in-process through an ASGI transport."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

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
from connectors.panel_common import FORWARD, FORWARD_GRANT, FTP, MAILBOX, PANEL_USER
from connectors.panel_plesk_cli import CliFailed
from connectors.plesk import PleskConnector, from_config
from connectors.testing import ConnectorConformance
from demo.organisation import email_of
from demo.panel_sandbox import PRIVATE, PanelSandbox, PleskState, running_panel_sandbox

API_KEY = "plesk-test-key-7d1e"  # a throwaway key for a throwaway fake
LEAVER = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")
MANAGER = email_of("lsmit")


@pytest.fixture
def sandbox() -> Iterator[PanelSandbox]:
    with running_panel_sandbox(plesk_key=API_KEY, da_key="unused", serve_http=False) as running:
        yield running


@pytest.fixture
def state(sandbox: PanelSandbox) -> PleskState:
    return sandbox.plesk_state


def build(sandbox: PanelSandbox, *, dry_run: bool = False, **overrides: Any) -> PleskConnector:
    config = sandbox.plesk.connector_config(**overrides)
    return from_config(config, dry_run, transport=sandbox.plesk.transport)


@pytest.fixture
def connector(sandbox: PanelSandbox) -> PleskConnector:
    return build(sandbox)


def grant_of(connector: PleskConnector, kind: str) -> AccessGrant:
    return next(g for g in connector.inventory(LEAVER) if g.kind == kind)


def revoke_all(connector: PleskConnector) -> None:
    for grant in connector.inventory(LEAVER):
        if connector.capabilities.of(grant.kind).default_action != KEEP:  # type: ignore[union-attr]
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED


class TestPleskConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, sandbox: PanelSandbox) -> PleskConnector:
        return build(sandbox)

    @pytest.fixture
    def dry_run_connector(self, sandbox: PanelSandbox) -> PleskConnector:
        return build(sandbox, dry_run=True)

    @pytest.fixture
    def leaver(self) -> Leaver:
        return LEAVER

    @pytest.fixture
    def peer_state(self, state: PleskState) -> Callable[[], Any]:
        return state.snapshot

    @pytest.fixture
    def throttle_once(self, state: PleskState) -> Callable[[int], None]:
        return state.throttle.once


class TestPleskConformanceForwarding(TestPleskConformance):
    @pytest.fixture
    def connector(self, sandbox: PanelSandbox) -> PleskConnector:
        return build(sandbox, mailbox_action=FORWARD)

    @pytest.fixture
    def dry_run_connector(self, sandbox: PanelSandbox) -> PleskConnector:
        return build(sandbox, dry_run=True, mailbox_action=FORWARD)


def test_inventory_lists_the_leavers_mailbox_forward_ftp_and_panel_user(
    connector: PleskConnector,
) -> None:
    grants = connector.inventory(LEAVER)
    assert [(g.kind, g.system_id) for g in grants] == [
        (FORWARD_GRANT, f"jdevries@example.test>{PRIVATE}"),
        (MAILBOX, "jdevries@example.test"),
        (FTP, "jdevries"),
        (PANEL_USER, "user:jdevries"),
    ]
    assert grants[1].label.text == (
        "Mailbox jdevries@example.test: sign-in disabled with a random password; "
        "the mail in it is kept"
    )


def test_mailbox_is_disabled_but_its_mail_kept(
    connector: PleskConnector, state: PleskState
) -> None:
    before = state.mail[LEAVER.email].password
    outcome = connector.revoke(grant_of(connector, MAILBOX))
    assert (outcome.status, outcome.action) == (OutcomeStatus.REVOKED, DISABLE)
    box = state.mail[LEAVER.email]
    assert box.mailbox is False and box.messages == 1342  # still there, with its mail
    assert box.password != before and len(box.password) >= 20
    assert state.mail[email_of("bmulder")].mailbox is True  # a colleague keeps his


def test_forward_sends_new_mail_to_the_configured_address(
    sandbox: PanelSandbox, state: PleskState
) -> None:
    connector = build(sandbox, mailbox_action=FORWARD)
    mailbox = grant_of(connector, MAILBOX)
    assert MANAGER in mailbox.label.text and "kept" in mailbox.label.text
    assert connector.capabilities.of(MAILBOX).default_action == FORWARD  # type: ignore[union-attr]
    revoke_all(connector)
    box = state.mail[LEAVER.email]
    assert (box.mailbox, box.forwarding, box.forwards, box.messages) == (
        False,
        True,
        [MANAGER],
        1342,
    )
    assert connector.verify(LEAVER).clean


def test_forward_can_be_chosen_per_grant_when_disable_is_the_default(
    connector: PleskConnector, state: PleskState
) -> None:
    outcome = connector.revoke(grant_of(connector, MAILBOX), FORWARD)
    assert outcome.status is OutcomeStatus.REVOKED and MANAGER in outcome.detail
    assert MANAGER in state.mail[LEAVER.email].forwards


def test_keep_reports_the_mailbox_and_never_touches_it(
    sandbox: PanelSandbox, state: PleskState
) -> None:
    connector = build(sandbox, mailbox_action=KEEP)
    mailbox = grant_of(connector, MAILBOX)
    assert "kept as it is" in mailbox.label.text
    with pytest.raises(UnsupportedAction):
        connector.revoke(mailbox)
    revoke_all(connector)
    assert state.mail[LEAVER.email].mailbox is True
    verification = connector.verify(LEAVER)
    assert verification.clean and verification.remaining == []


@pytest.mark.parametrize("action", ["disable", "forward", "keep"])
def test_delete_is_offered_but_never_the_default(sandbox: PanelSandbox, action: str) -> None:
    mailbox = build(sandbox, mailbox_action=action).capabilities.of(MAILBOX)
    assert mailbox is not None and mailbox.default_action == action
    assert mailbox.actions[-1] == DELETE


def test_delete_only_when_asked(connector: PleskConnector, state: PleskState) -> None:
    assert connector.revoke(grant_of(connector, MAILBOX), DELETE).status is OutcomeStatus.REVOKED
    assert LEAVER.email not in state.mail


def test_ftp_account_removed_and_panel_user_disabled(
    connector: PleskConnector, state: PleskState
) -> None:
    revoke_all(connector)
    assert "jdevries" not in state.ftp and "deploy" in state.ftp
    assert state.users["jdevries"]["status"] == "disabled"
    assert state.users["jdevries"]["password"] != "panel-old-5"
    assert state.users["bmulder"]["status"] == "enabled"


def test_username_mapping_finds_other_logins(sandbox: PanelSandbox, state: PleskState) -> None:
    state.ftp["jan.dv"] = state.ftp.pop("jdevries")
    connector = build(sandbox, usernames={"E1042": "jan.dv"})
    assert grant_of(connector, FTP).system_id == "jan.dv"


def test_a_failing_utility_is_an_error_naming_it_and_hides_the_password(
    connector: PleskConnector,
) -> None:
    with connector.api.session() as client, pytest.raises(CliFailed) as raised:
        connector.cli.run(
            client, "mail", ["--update", LEAVER.email, "-passwd", "S3cret-pw", "-bogus", "1"]
        )
    message = str(raised.value)
    assert "exit 1" in message and "Unknown option -bogus" in message
    assert "S3cret-pw" not in message and "[redacted]" in message


def test_wrong_api_key_check_names_host_and_what_to_fix(sandbox: PanelSandbox) -> None:
    connector = build(sandbox, api_key="not-the-key")
    health = connector.check()
    assert not health.ok
    assert sandbox.plesk.base_url in health.messages[0] and "HTTP 401" in health.messages[0]
    assert "X-API-Key" in health.messages[0] and "secret_key --create" in health.messages[0]
    assert "not-the-key" not in repr(health)
    with pytest.raises(PermanentError) as raised:
        connector.inventory(LEAVER)
    assert not isinstance(raised.value, TransientError)


def test_check_names_a_mail_domain_the_server_does_not_have(sandbox: PanelSandbox) -> None:
    health = build(sandbox, mail_domains=["example.test", "other.test"]).check()
    assert not health.ok and "mail domain other.test is not on" in health.messages[0]


def test_503_with_retry_after_is_waited_once(connector: PleskConnector, state: PleskState) -> None:
    waits: list[float] = []
    for api in (connector.api, connector.cli.reader):  # the wait, not the clock, is tested
        api._sleep = waits.append
    state.throttle.once(2, status=503)
    assert connector.revoke(grant_of(connector, FTP)).status is OutcomeStatus.REVOKED
    assert waits == [2.0] and "jdevries" not in state.ftp


def test_passwords_never_reach_the_logs(
    connector: PleskConnector, state: PleskState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with capture_logs() as events:
        revoke_all(connector)
    secrets = [state.mail[LEAVER.email].password, state.users["jdevries"]["password"], API_KEY]
    logged = repr(events) + caplog.text
    assert any(e.get("event") == "grant revoked" for e in events)
    assert not [s for s in secrets if s in logged]


def test_the_sandbox_over_http() -> None:
    with running_panel_sandbox(plesk_key=API_KEY, da_key="x") as served:
        assert served.plesk.base_url.startswith("http://127.0.0.1:")
        connector = from_config(served.plesk.connector_config(), False)
        assert connector.check().ok
        assert len(connector.inventory(LEAVER)) == 4
        assert "sandbox" in served.plesk.name and API_KEY not in repr(served.plesk)
