"""The SCIM 2.0 connector against a real SCIM server (scim2-server, in memory, over HTTP)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors import scim_client
from connectors.base import (
    DELETE,
    DISABLE,
    AccessGrant,
    Effect,
    Leaver,
    OutcomeStatus,
    PermanentError,
    SubjectNotFound,
    TransientError,
)
from connectors.http import HttpError, retry_after_seconds
from connectors.registry import build_connector, known_kinds
from connectors.scim import ACCOUNT, GROUP, ScimConnector, from_config
from connectors.scim_client import filter_string
from connectors.testing import ConnectorConformance
from tests.connectors.scim_peer import (
    TOKEN,
    ScimOrg,
    ScimPeer,
    answer_once,
    answer_with,
    concurrent_writer,
    refuse_member_filter,
    refuse_path_form,
    running_peer,
    seed_org,
    user_resource,
)

NOBODY = Leaver(employee_id="E0", email="nobody@example.test", display_name="Nobody")


@pytest.fixture
def peer() -> Iterator[ScimPeer]:
    with running_peer() as running:
        yield running


@pytest.fixture
def org(peer: ScimPeer) -> ScimOrg:
    return seed_org(peer)


@pytest.fixture
def connector(peer: ScimPeer, org: ScimOrg) -> ScimConnector:
    return from_config(peer.connector_config(), dry_run=False)


# -- the conformance suite, in three server and configuration variants ---------------


class TestScimConformance(ConnectorConformance):
    """Deactivate on leave, ETags on, groups found with the members filter."""

    @pytest.fixture
    def connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        return from_config(peer.connector_config(), dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        return from_config(peer.connector_config(), dry_run=True)

    @pytest.fixture
    def leaver(self, org: ScimOrg) -> Leaver:
        return org.leaver

    @pytest.fixture
    def peer_state(self, peer: ScimPeer) -> Callable[[], Any]:
        return peer.state

    @pytest.fixture
    def throttle_once(self, peer: ScimPeer) -> Callable[[int], None]:
        def throttle(seconds: int) -> None:
            peer.application.interceptors.append(answer_once(429, retry_after=str(seconds)))

        return throttle


class TestScimConformanceDeleteMode(TestScimConformance):
    @pytest.fixture
    def connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        return from_config(peer.connector_config(on_leave="delete"), dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        return from_config(peer.connector_config(on_leave="delete"), dry_run=True)


class TestScimConformanceGroupsAttributeNoEtags(TestScimConformance):
    """A server that returns `groups` on users and has no ETags; matched on externalId."""

    @pytest.fixture
    def peer(self) -> Iterator[ScimPeer]:
        with running_peer(etag=False, groups_attribute=True) as running:
            yield running

    @pytest.fixture
    def connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        config = peer.connector_config(match_attribute="externalId", match_value="employee_id")
        return from_config(config, dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, peer: ScimPeer, org: ScimOrg) -> ScimConnector:
        config = peer.connector_config(match_attribute="externalId", match_value="employee_id")
        return from_config(config, dry_run=True)


# -- helpers: look at the real server -------------------------------------------------


def user_path(org: ScimOrg, user_name: str | None = None) -> str:
    return f"Users/{org.users[user_name] if user_name else org.leaver_id}"


def grant_of(connector: ScimConnector, leaver: Leaver, kind: str) -> AccessGrant:
    return next(g for g in connector.inventory(leaver) if g.kind == kind)


def writes(peer: ScimPeer) -> list[Any]:
    return [s for s in peer.seen if s.method != "GET"]


def revoke_all(connector: ScimConnector, leaver: Leaver) -> list[OutcomeStatus]:
    return [connector.revoke(g).status for g in connector.inventory(leaver)]


# -- finding the leaver and their access ------------------------------------------------


def test_inventory_lists_each_group_then_the_account(
    connector: ScimConnector, org: ScimOrg
) -> None:
    grants = connector.inventory(org.leaver)
    assert [(g.kind, g.effect, g.label.text) for g in grants] == [
        (GROUP, Effect.MEMBERSHIP, "Member of all-staff"),
        (GROUP, Effect.MEMBERSHIP, "Member of deploy"),
        (GROUP, Effect.MEMBERSHIP, "Member of developers"),
        (ACCOUNT, Effect.SIGN_IN, "Sign-in as jan.devries@example.test"),
    ]
    assert {g.account for g in grants} == {org.leaver_id}
    assert [g.system_id for g in grants[:3]] == [org.groups[n] for n in org.leaver_groups]
    assert [g.target for g in grants[:3]] == list(org.leaver_groups)
    assert grants[3].key == f"webapp|account|{org.leaver_id}"
    assert grants[0].key == f"webapp|group|{org.groups['all-staff']}"


def test_groups_are_searched_by_member_when_users_lack_the_attribute(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    connector.inventory(org.leaver)
    searches = [s.query["filter"] for s in peer.seen if s.path == "/Groups"]
    assert searches == [f'members[value eq "{org.leaver_id}"]']


def test_groups_attribute_is_used_when_the_server_returns_it() -> None:
    with running_peer(groups_attribute=True) as peer:
        org = seed_org(peer)
        connector = from_config(peer.connector_config(), dry_run=False)
        grants = connector.inventory(org.leaver)
        assert [g.label.text for g in grants[:3]] == [f"Member of {n}" for n in org.leaver_groups]
        assert not [s for s in peer.seen if s.path == "/Groups"]
        before = connector.verify(org.leaver).checks[1]
        assert str(before.detail).startswith(f"the groups attribute of {user_path(org)}: all-staff")
        for grant in grants:
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED
        assert all(org.leaver_id not in peer.member_ids(org.groups[n]) for n in org.leaver_groups)
        # in no group, the user carries no `groups` (RFC 7643 §2.5): the groups are searched
        after = connector.verify(org.leaver).checks[1]
        assert (
            after.passed
            and str(after.detail) == f"groups whose members include {user_path(org)}: none"
        )


def test_filter_value_with_quote_and_backslash_is_escaped(
    peer: ScimPeer, org: ScimOrg, connector: ScimConnector
) -> None:
    awkward = 'o"brien\\admin@example.test'
    created = peer.post("Users", user_resource(awkward, "E2001", "Sean O'Brien"))
    leaver = Leaver(employee_id="E2001", email=awkward, display_name="Sean O'Brien")
    grants = connector.inventory(leaver)
    assert [g.account for g in grants] == [created["id"]]
    assert peer.seen[0].query["filter"] == 'userName eq "o\\"brien\\\\admin@example.test"'
    assert connector.revoke(grants[0]).status is OutcomeStatus.REVOKED
    assert peer.get(f"Users/{created['id']}")["active"] is False  # type: ignore[index]


@pytest.mark.parametrize(
    "hostile",
    [
        'x" or userName pr or userName eq "y',
        "jan.devries@example.test\\",
        '"',
        "jan.devries@example.test old",
    ],
)
def test_hostile_filter_values_match_nobody(
    connector: ScimConnector, peer: ScimPeer, hostile: str
) -> None:
    leaver = Leaver(employee_id="E0", email=hostile, display_name="Mallory")
    assert connector.inventory(leaver) == []
    assert connector.verify(leaver).clean
    assert not writes(peer)


def test_filter_string_is_a_json_string() -> None:
    assert filter_string('a"b\\c') == '"a\\"b\\\\c"'
    assert filter_string("Zoë") == '"Zoë"'


def test_match_on_external_id_with_the_employee_id(peer: ScimPeer, org: ScimOrg) -> None:
    connector = from_config(
        peer.connector_config(match_attribute="externalId", match_value="employee_id"), False
    )
    leaver = Leaver(employee_id="E1042", email="unknown@example.test", display_name="Jan")
    assert {g.account for g in connector.inventory(leaver)} == {org.leaver_id}
    assert peer.seen[0].query["filter"] == 'externalId eq "E1042"'


def test_two_matching_users_are_refused_and_nothing_is_written(
    peer: ScimPeer, org: ScimOrg
) -> None:
    twin = peer.post("Users", user_resource("jan2@example.test", "E1042", "Jan de Vries"))
    connector = from_config(
        peer.connector_config(match_attribute="externalId", match_value="employee_id"), False
    )
    with pytest.raises(PermanentError, match="2 users match") as raised:
        connector.inventory(org.leaver)
    assert org.leaver_id in str(raised.value) and twin["id"] in str(raised.value)
    with pytest.raises(PermanentError, match="refusing to guess"):
        connector.verify(org.leaver)
    assert not writes(peer)


# -- revoking, seen at the server ---------------------------------------------------------


def test_deactivate_sets_active_false_with_the_path_form(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    outcome = connector.revoke(grant_of(connector, org.leaver, ACCOUNT))
    assert outcome.status is OutcomeStatus.REVOKED
    assert peer.get(user_path(org))["active"] is False  # type: ignore[index]
    assert peer.get(user_path(org, "lisa.smit@example.test"))["active"] is True  # type: ignore[index]
    assert [w.body["Operations"] for w in writes(peer)] == [
        [{"op": "replace", "path": "active", "value": False}]
    ]


def test_refused_path_form_falls_back_to_the_value_form(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    peer.application.interceptors.append(refuse_path_form)
    outcome = connector.revoke(grant_of(connector, org.leaver, ACCOUNT))
    assert outcome.status is OutcomeStatus.REVOKED
    assert "value form" in outcome.detail
    assert [w.body["Operations"] for w in writes(peer)] == [
        [{"op": "replace", "path": "active", "value": False}],
        [{"op": "replace", "value": {"active": False}}],
    ]
    assert peer.get(user_path(org))["active"] is False  # type: ignore[index]


def test_other_patch_refusals_do_not_fall_back(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    peer.application.interceptors.append(answer_with(400, method="PATCH"))
    with pytest.raises(HttpError, match="answered 400 by the test") as raised:
        connector.revoke(grant_of(connector, org.leaver, ACCOUNT))
    assert raised.value.status == 400
    assert len(writes(peer)) == 1


def test_memberships_are_removed_and_colleagues_keep_theirs(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    before = {name: peer.member_ids(gid) for name, gid in org.groups.items()}
    for grant in connector.inventory(org.leaver):
        if grant.kind == GROUP:
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    for name, gid in org.groups.items():
        assert peer.member_ids(gid) == before[name] - {org.leaver_id}
    assert [w.body["Operations"] for w in writes(peer)] == 3 * [
        [{"op": "remove", "path": f'members[value eq "{org.leaver_id}"]'}]
    ]
    assert peer.get(user_path(org))["active"] is True  # type: ignore[index]


def test_delete_mode_deletes_the_user_after_its_memberships(peer: ScimPeer, org: ScimOrg) -> None:
    connector = from_config(peer.connector_config(on_leave="delete"), dry_run=False)
    grants = connector.inventory(org.leaver)
    assert grants[-1].label.text == "Sign-in as jan.devries@example.test"
    assert connector.capabilities.of(ACCOUNT).default_action == DELETE  # type: ignore[union-attr]
    assert revoke_all(connector, org.leaver) == 4 * [OutcomeStatus.REVOKED]
    assert [(w.method, w.path.split("/")[1]) for w in writes(peer)] == [
        *3 * [("PATCH", "Groups")],
        ("DELETE", "Users"),
    ]
    assert peer.get(user_path(org)) is None
    assert peer.get(user_path(org, "lisa.smit@example.test")) is not None
    assert all(org.leaver_id not in peer.member_ids(gid) for gid in org.groups.values())
    assert [connector.revoke(g).status for g in grants] == 4 * [OutcomeStatus.ALREADY_DONE]


def test_delete_mode_also_deletes_an_inactive_user(peer: ScimPeer, org: ScimOrg) -> None:
    deactivate = from_config(peer.connector_config(), dry_run=False)
    deactivate.revoke(grant_of(deactivate, org.leaver, ACCOUNT))
    delete = from_config(peer.connector_config(on_leave="delete"), dry_run=False)
    assert delete.revoke(grant_of(delete, org.leaver, ACCOUNT)).status is (OutcomeStatus.REVOKED)
    assert peer.get(user_path(org)) is None


def test_if_match_carries_the_etag_the_server_gave(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    versions = {
        path: peer.get(path)["meta"]["version"]  # type: ignore[index]
        for path in [user_path(org), *(f"Groups/{org.groups[n]}" for n in org.leaver_groups)]
    }
    assert all(v.startswith('W/"') for v in versions.values())
    revoke_all(connector, org.leaver)
    assert {w.path.lstrip("/"): w.if_match for w in writes(peer)} == versions


def test_no_if_match_without_etags() -> None:
    with running_peer(etag=False) as peer:
        org = seed_org(peer)
        connector = from_config(peer.connector_config(), dry_run=False)
        assert revoke_all(connector, org.leaver) == 4 * [OutcomeStatus.REVOKED]
        assert len(writes(peer)) == 4
        assert all(w.if_match is None for w in writes(peer))


def test_changed_resource_is_read_again_and_written_once_more(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, ACCOUNT)
    peer.application.interceptors.append(concurrent_writer(times=1))
    assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    user = peer.get(user_path(org))
    assert user is not None and user["active"] is False
    assert user["nickName"] == "changed by someone else 0"  # the other client's change stays
    first, second = writes(peer)
    assert first.if_match != second.if_match == user_etag_before(user)


def user_etag_before(user: dict[str, Any]) -> str:
    """The version just before our write: scim2-server counts versions up by one."""
    number = int(user["meta"]["version"].removeprefix('W/"').removesuffix('"'))
    return f'W/"{number - 1}"'


def test_resource_changing_twice_is_transient(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, GROUP)
    peer.application.interceptors.append(concurrent_writer(times=2))
    with pytest.raises(TransientError, match="changed while we wrote to it, twice"):
        connector.revoke(grant)
    assert org.leaver_id in peer.member_ids(grant.system_id)


def test_revoking_twice_is_harmless(connector: ScimConnector, peer: ScimPeer, org: ScimOrg) -> None:
    grants = connector.inventory(org.leaver)
    assert [connector.revoke(g).status for g in grants] == 4 * [OutcomeStatus.REVOKED]
    written = len(writes(peer))
    outcomes = [connector.revoke(g) for g in grants]
    assert [o.status for o in outcomes] == 4 * [OutcomeStatus.ALREADY_DONE]
    assert "no longer lists" in outcomes[0].detail and "already inactive" in outcomes[3].detail
    assert len(writes(peer)) == written  # a second round only reads


def test_vanished_group_and_user_are_already_done(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grants = connector.inventory(org.leaver)
    admin = peer.client()
    assert admin.delete(f"Groups/{grants[0].system_id}").status_code == 204
    assert admin.delete(user_path(org)).status_code == 204
    assert connector.revoke(grants[0]).status is OutcomeStatus.ALREADY_DONE
    assert connector.revoke(grants[-1]).status is OutcomeStatus.ALREADY_DONE


def test_member_gone_between_read_and_write_is_already_done(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, GROUP)
    peer.application.interceptors.append(answer_with(400, scim_type="noTarget", method="PATCH"))
    outcome = connector.revoke(grant)
    assert outcome.status is OutcomeStatus.ALREADY_DONE and "noTarget" in outcome.detail


def test_dry_run_sends_no_write(peer: ScimPeer, org: ScimOrg) -> None:
    dry = from_config(peer.connector_config(on_leave="delete"), dry_run=True)
    with capture_logs() as logs:
        assert revoke_all(dry, org.leaver) == 4 * [OutcomeStatus.DRY_RUN]
    assert not writes(peer)
    assert len([e for e in logs if e["event"] == "http write skipped: dry run"]) == 4


def test_a_grant_of_another_connector_is_refused(connector: ScimConnector, org: ScimOrg) -> None:
    grant = grant_of(connector, org.leaver, ACCOUNT)
    with pytest.raises(PermanentError, match="belongs to connector 'directory'"):
        connector.revoke(grant.model_copy(update={"connector": "directory"}))


def test_the_token_is_never_logged(connector: ScimConnector, org: ScimOrg) -> None:
    with capture_logs() as logs:
        revoke_all(connector, org.leaver)
        connector.verify(org.leaver)
    writes_logged = [e for e in logs if e["event"] == "http write"]
    assert len(writes_logged) == 4 and all(e["conditional"] for e in writes_logged)
    assert TOKEN not in repr(logs)


# -- proving it ------------------------------------------------------------------------


def test_verify_after_revoke_is_clean_and_says_why(connector: ScimConnector, org: ScimOrg) -> None:
    revoke_all(connector, org.leaver)
    verification = connector.verify(org.leaver)
    assert verification.remaining == [] and verification.clean
    assert [(c.name.text, c.passed) for c in verification.checks] == [
        ("account inactive", True),
        ("no group lists the account", True),
    ]
    assert str(verification.checks[0].detail) == f"{user_path(org)} is inactive"


def test_verify_before_revoke_names_what_is_left(connector: ScimConnector, org: ScimOrg) -> None:
    verification = connector.verify(org.leaver)
    checks = {c.name.text: c for c in verification.checks}
    assert not checks["account inactive"].passed
    assert "still ACTIVE" in str(checks["account inactive"].detail)
    assert "all-staff" in str(checks["no group lists the account"].detail)
    assert len(verification.remaining) == 4


def test_verify_sees_a_membership_added_back(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    revoke_all(connector, org.leaver)
    response = peer.client().patch(
        f"Groups/{org.groups['finance']}",
        json={
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": org.leaver_id}]}],
        },
    )
    assert response.status_code in (200, 204), response.text
    verification = connector.verify(org.leaver)
    assert [g.label.text for g in verification.remaining] == ["Member of finance"]
    assert not verification.clean


def test_verify_in_delete_mode_finds_no_account(peer: ScimPeer, org: ScimOrg) -> None:
    connector = from_config(peer.connector_config(on_leave="delete"), dry_run=False)
    before = connector.verify(org.leaver)
    assert (before.checks[0].name.text, before.checks[0].passed) == ("account deleted", False)
    revoke_all(connector, org.leaver)
    after = connector.verify(org.leaver)
    assert after.clean and [c.name.text for c in after.checks] == ["no account"]


# -- health --------------------------------------------------------------------------------


def test_check_reports_what_the_server_supports(connector: ScimConnector) -> None:
    health = connector.check()
    assert health.ok
    assert health.messages == ["patch: supported", "filter: supported", "etag: supported"]


def test_check_without_etags_is_still_healthy() -> None:
    with running_peer(etag=False) as peer:
        health = from_config(peer.connector_config(), dry_run=False).check()
    assert health.ok
    assert health.messages[-1] == "etag: not supported; writes are sent without If-Match"


# -- errors, mapped at the one choke point ------------------------------------------------


def test_wrong_token_is_a_clear_permanent_error(peer: ScimPeer, org: ScimOrg) -> None:
    connector = from_config(peer.connector_config(token="not-the-token"), dry_run=False)
    with pytest.raises(PermanentError, match="check the token") as raised:
        connector.inventory(org.leaver)
    assert peer.base_url in str(raised.value) and "HTTP 401" in str(raised.value)
    assert not isinstance(raised.value, TransientError)
    health = connector.check()  # /ServiceProviderConfig answers without a token; /Users not
    assert not health.ok and "check the token" in health.messages[0]
    assert "not-the-token" not in repr(health) + str(raised.value)


def test_stopped_server_is_transient(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, ACCOUNT)
    peer.stop()
    with pytest.raises(TransientError, match="ConnectError"):
        connector.revoke(grant)
    with pytest.raises(TransientError):
        connector.inventory(org.leaver)
    health = connector.check()
    assert not health.ok and "ConnectError" in health.messages[0]


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        connector = from_config(
            {"base_url": f"http://127.0.0.1:{port}/v2", "token": "t", "timeout_seconds": 0.2},
            dry_run=False,
        )
        with pytest.raises(TransientError, match="ReadTimeout"):
            connector.inventory(NOBODY)


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (503, "120"), (502, None)])
def test_throttling_and_server_errors_are_transient_with_retry_after(
    peer: ScimPeer, org: ScimOrg, status: int, retry_after: str | None
) -> None:
    connector = from_config(peer.connector_config(retry_budget_seconds=5), dry_run=False)
    peer.application.interceptors.append(answer_with(status, retry_after=retry_after))
    started = time.monotonic()
    with pytest.raises(TransientError) as raised:
        connector.inventory(org.leaver)
    assert time.monotonic() - started < 1  # asked to wait longer than the budget: not waited
    assert f"HTTP {status}" in str(raised.value)
    expected = float(retry_after) if retry_after else None
    assert raised.value.retry_after == expected
    assert len(peer.seen) == 1


def test_retry_after_within_the_budget_is_waited_and_sent_again(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, ACCOUNT)
    peer.application.interceptors.append(answer_once(503, retry_after="1", method="PATCH"))
    started = time.monotonic()
    with capture_logs() as logs:
        assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert time.monotonic() - started >= 1
    assert [w.method for w in writes(peer)] == ["PATCH", "PATCH"]
    assert [e["seconds"] for e in logs if e["event"] == "http retry after"] == [1.0]
    assert peer.get(user_path(org))["active"] is False  # type: ignore[index]


def test_the_wait_budget_bounds_the_total_wait(peer: ScimPeer, org: ScimOrg) -> None:
    waits: list[float] = []
    connector = from_config(peer.connector_config(retry_budget_seconds=5), dry_run=False)
    connector._sleep = waits.append  # the budget, not the clock, is what is tested here
    peer.application.interceptors.append(answer_with(429, retry_after="2"))
    with pytest.raises(TransientError) as raised:
        connector.inventory(org.leaver)
    assert waits == [2.0, 2.0]  # a third wait would end past five seconds
    assert raised.value.retry_after == 2.0 and len(peer.seen) == 3


def test_retry_after_as_a_date() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_other_client_errors_carry_scim_detail_and_type(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    peer.application.interceptors.append(refuse_member_filter)
    with pytest.raises(HttpError, match="HTTP 400 invalidFilter: filtering on members") as raised:
        connector.inventory(org.leaver)
    assert (raised.value.status, raised.value.code) == (400, "invalidFilter")
    assert not isinstance(raised.value, TransientError)


def test_not_implemented_is_permanent(
    connector: ScimConnector, peer: ScimPeer, org: ScimOrg
) -> None:
    grant = grant_of(connector, org.leaver, GROUP)
    peer.application.interceptors.append(answer_with(501, method="PATCH"))
    with pytest.raises(HttpError, match="HTTP 501"):
        connector.revoke(grant)


def test_wrong_base_url_says_so(peer: ScimPeer, org: ScimOrg) -> None:
    connector = from_config(peer.connector_config(base_url=peer.base_url + "/Users/x"), False)
    with pytest.raises(PermanentError, match="check that base_url is the SCIM root") as raised:
        connector.inventory(org.leaver)
    assert not isinstance(raised.value, SubjectNotFound)


def test_search_follows_the_pages(
    connector: ScimConnector, org: ScimOrg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scim_client, "PAGE_SIZE", 2)
    assert len(connector.inventory(org.leaver)) == 4
    revoke_all(connector, org.leaver)
    assert connector.verify(org.leaver).clean


# -- TLS ---------------------------------------------------------------------------------


def test_https_with_the_right_ca(certificates: dict[str, dict[str, Path]]) -> None:
    with running_peer(tls=certificates["good"]) as peer:
        org = seed_org(peer)
        connector = from_config(
            peer.connector_config(ca_file=str(certificates["good"]["ca"])), dry_run=False
        )
        assert len(connector.inventory(org.leaver)) == 4
        assert connector.check().ok


@pytest.mark.parametrize("trusted", ["other", None])
def test_https_refuses_an_unverified_server(
    certificates: dict[str, dict[str, Path]], trusted: str | None
) -> None:
    with running_peer(tls=certificates["good"]) as peer:
        ca_file = str(certificates[trusted]["ca"]) if trusted else None
        connector = from_config(peer.connector_config(ca_file=ca_file), dry_run=False)
        with pytest.raises(PermanentError, match="TLS certificate was refused") as raised:
            connector.inventory(NOBODY)
        assert not isinstance(raised.value, TransientError)


# -- configuration -------------------------------------------------------------------------


def test_registry_builds_the_scim_connector(peer: ScimPeer) -> None:
    assert "scim" in known_kinds()
    connector = build_connector(peer.connector_config(), dry_run=True)
    assert isinstance(connector, ScimConnector) and connector.dry_run
    assert connector.name == "webapp"
    config = connector.config
    assert (config.match_attribute, config.match_value, config.on_leave) == (
        "userName",
        "email",
        DISABLE,
    )
    legacy = build_connector(peer.connector_config(on_leave="deactivate"))
    assert isinstance(legacy, ScimConnector) and legacy.config.on_leave == DISABLE


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surprise": True}, "surprise"),
        ({"base_url": "http://scim.example.test/v2"}, "base_url"),
        ({"base_url": "ftp://127.0.0.1/v2"}, "base_url"),
        ({"base_url": "https://scim.example.test/v2?x=1"}, "base_url"),
        ({"base_url": "not a url"}, "base_url"),
        ({"match_attribute": "emails"}, "match_attribute"),
        ({"match_value": "display_name"}, "match_value"),
        ({"on_leave": "archive"}, "on_leave"),
        ({"retry_budget_seconds": -1}, "retry_budget_seconds"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"ca_file": __file__, "verify": False}, "verify"),
        ({"token": None}, "token"),
    ],
)
def test_bad_config_is_refused_naming_the_field(
    peer: ScimPeer, change: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        build_connector({**peer.connector_config(), **change})
    assert field in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_https_and_localhost_urls_are_accepted() -> None:
    for url in ("https://scim.example.test/scim/v2/", "http://localhost:8080/v2"):
        connector = from_config({"base_url": url, "token": "t"}, dry_run=False)
        assert connector.config.base_url == url.rstrip("/")


def test_secret_is_not_in_the_config_repr(peer: ScimPeer) -> None:
    connector = from_config(peer.connector_config(), dry_run=False)
    assert TOKEN not in repr(connector.config)
