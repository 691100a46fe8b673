"""The GitLab connector against a stateful fake of GitLab's REST API v4 (`gitlab_fake.py`),
served over HTTP on 127.0.0.1. Assertions are on the fake's state afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.base import (
    DISABLE,
    MANUAL,
    AccessGrant,
    Leaver,
    OutcomeStatus,
    PermanentError,
    UnsupportedAction,
)
from connectors.gitlab import (
    ACCOUNT,
    GROUP_MEMBER,
    INHERITED,
    PROJECT_MEMBER,
    SSH_KEY,
    TOKEN,
    UNMAPPED,
    GitLabConnector,
    from_config,
)
from connectors.gitlab_access import GitLabUser
from connectors.gitlab_client import Forbidden
from connectors.testing import ConnectorConformance
from tests.connectors.gitlab_fake import (
    DEVELOPER,
    GROUP,
    MAINTAINER,
    OWNER,
    FakeGitLab,
    GitLabState,
    Node,
    RunningGitLab,
    User,
    serving,
)

ADMIN_TOKEN = "glpat-admin-test-0001"  # throwaway tokens for a throwaway fake
OWNER_TOKEN = "glpat-owner-test-0002"
READ_TOKEN = "glpat-read-test-0003"
LEAVER = Leaver(employee_id="E1042", email="jan.devries@example.test", display_name="Jan de Vries")


@dataclass
class Org:
    leaver: User
    colleague: User
    nodes: dict[str, Node]
    token_ids: list[int]
    key_ids: list[int]


def seed(state: GitLabState, fake: FakeGitLab) -> Org:
    root = state.add_user("root", "root@example.test", is_admin=True)
    olga = state.add_user("olga", "olga@example.test")
    jan = state.add_user("jdevries", LEAVER.email, name="Jan de Vries")
    lisa = state.add_user("lsmit", "lisa.smit@example.test")
    fake.allow(ADMIN_TOKEN, root, ["api"])
    fake.allow(OWNER_TOKEN, olga, ["api"])
    fake.allow(READ_TOKEN, root, ["read_api"])
    acme = state.add_group("acme")
    platform = state.add_group("platform", acme)
    infra = state.add_group("infra", platform)
    web = state.add_group("web", acme)
    side = state.add_group("side")
    nodes = {
        "acme": acme,
        "acme/platform": platform,
        "acme/platform/infra": infra,
        "acme/web": web,
        "side": side,
        "acme/platform/deploy": state.add_project("deploy", platform),
        "acme/platform/infra/terraform": state.add_project("terraform", infra),
        "acme/web/site": state.add_project("site", web),
    }
    state.add_member(acme, olga, OWNER)
    state.add_member(side, olga, OWNER)
    state.add_member(platform, jan, DEVELOPER)
    state.add_member(infra, jan, MAINTAINER)  # direct, below another direct membership
    state.add_member(nodes["acme/web/site"], jan, DEVELOPER)
    state.add_member(platform, lisa, MAINTAINER)
    state.add_member(nodes["acme/web/site"], lisa, DEVELOPER)
    tokens = [state.add_token(jan, "laptop", ["api"]), state.add_token(jan, "ci", ["read_api"])]
    state.add_token(jan, "old", ["api"]).revoked = True
    keys = [state.add_key(jan, "work laptop"), state.add_key(jan, "desktop")]
    state.add_key(lisa, "lisa's key")
    return Org(jan, lisa, nodes, [t.id for t in tokens], [k.id for k in keys])


@pytest.fixture
def fake() -> FakeGitLab:
    return FakeGitLab(GitLabState())


@pytest.fixture
def org(fake: FakeGitLab) -> Org:
    return seed(fake.state, fake)


@pytest.fixture
def gitlab(fake: FakeGitLab, org: Org) -> Iterator[RunningGitLab]:
    with serving(fake) as running:
        yield running


def config(gitlab: RunningGitLab, **extra: Any) -> dict[str, Any]:
    return {
        "name": "gitlab",
        "kind": "gitlab",
        "base_url": gitlab.base_url,
        "token": ADMIN_TOKEN,
        **extra,
    }


def owner_config(gitlab: RunningGitLab, **extra: Any) -> dict[str, Any]:
    settings = {
        "token": OWNER_TOKEN,
        "admin": False,
        "groups": ["acme"],
        "usernames": {LEAVER.employee_id: "jdevries"},
    }
    return config(gitlab, **{**settings, **extra})


@pytest.fixture
def connector(gitlab: RunningGitLab) -> GitLabConnector:
    return from_config(config(gitlab), dry_run=False)


def members(state: GitLabState, path: str, org: Org) -> dict[int, int]:
    node = org.nodes[path]
    return state.members[(node.kind, node.id)]


# -- the conformance suite: admin token, and a group owner's token ----------------------


class TestGitLabConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, gitlab: RunningGitLab) -> GitLabConnector:
        return from_config(config(gitlab), dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, gitlab: RunningGitLab) -> GitLabConnector:
        return from_config(config(gitlab), dry_run=True)

    @pytest.fixture
    def leaver(self) -> Leaver:
        return LEAVER

    @pytest.fixture
    def peer_state(self, gitlab: RunningGitLab) -> Callable[[], Any]:
        return gitlab.state.snapshot

    @pytest.fixture
    def throttle_once(self, gitlab: RunningGitLab) -> Callable[[int], None]:
        return gitlab.fake.throttle_once

    @pytest.fixture
    def expects_cascades(self) -> bool:
        return True


class TestGitLabGroupOwnerConformance(TestGitLabConformance):
    """A non-admin token (a group owner, as on gitlab.com) walking the `acme` group."""

    @pytest.fixture
    def connector(self, gitlab: RunningGitLab) -> GitLabConnector:
        return from_config(owner_config(gitlab), dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, gitlab: RunningGitLab) -> GitLabConnector:
        return from_config(owner_config(gitlab), dry_run=True)


# -- inventory ------------------------------------------------------------------------


def kinds_and_targets(grants: list[AccessGrant]) -> list[tuple[str, str]]:
    return [(g.kind, g.target) for g in grants]


def test_inventory_with_an_admin_token(connector: GitLabConnector, org: Org) -> None:
    grants = connector.inventory(LEAVER)
    assert kinds_and_targets(grants) == [
        (GROUP_MEMBER, "acme/platform/infra"),  # deepest first
        (PROJECT_MEMBER, "acme/web/site"),
        (GROUP_MEMBER, "acme/platform"),
        (INHERITED, "acme/platform/deploy"),
        (INHERITED, "acme/platform/infra/terraform"),
        (TOKEN, "laptop"),
        (TOKEN, "ci"),
        (SSH_KEY, "work laptop"),
        (SSH_KEY, "desktop"),
        (ACCOUNT, "jdevries"),
    ]
    assert {g.account for g in grants} == {str(org.leaver.id)}
    by_target = {g.target: g for g in grants if g.kind in (GROUP_MEMBER, INHERITED)}
    platform = by_target["acme/platform"].key
    assert by_target["acme/platform/infra"].cascades_from == platform
    assert by_target["acme/platform/deploy"].cascades_from == platform
    terraform = by_target["acme/platform/infra/terraform"]
    assert terraform.cascades_from == by_target["acme/platform/infra"].key
    assert terraform.label.text == (
        "Access to acme/platform/infra/terraform (Maintainer), inherited from group "
        "acme/platform/infra: goes with that membership"
    )
    assert by_target["acme/platform"].cascades_from is None
    assert [t for t in org.token_ids] == [int(g.system_id) for g in grants if g.kind == TOKEN]


def test_a_membership_inherited_from_a_parent_group_goes_with_it(
    connector: GitLabConnector, gitlab: RunningGitLab, org: Org
) -> None:
    grants = {g.target: g for g in connector.inventory(LEAVER)}
    deploy = grants["acme/platform/deploy"]
    with pytest.raises(UnsupportedAction):  # never sent: it goes with acme/platform
        connector.revoke(deploy)
    outcome = connector.revoke(grants["acme/platform"])
    assert outcome.status is OutcomeStatus.REVOKED
    # GitLab removed the direct membership below too (skip_subresources is false)
    for path in ("acme/platform", "acme/platform/infra"):
        assert org.leaver.id not in members(gitlab.state, path, org)
    assert org.colleague.id in members(gitlab.state, "acme/platform", org)
    left = kinds_and_targets(connector.inventory(LEAVER))
    assert not [t for k, t in left if t.startswith("acme/platform")]
    assert (PROJECT_MEMBER, "acme/web/site") in left
    # the subgroup membership went with its parent: revoking it now is already done
    assert connector.revoke(grants["acme/platform/infra"]).status is OutcomeStatus.ALREADY_DONE


def test_group_owner_token_walks_the_configured_group(gitlab: RunningGitLab, org: Org) -> None:
    gitlab.state.add_member(org.nodes["side"], org.leaver, DEVELOPER)  # outside `acme`
    owner = from_config(owner_config(gitlab), dry_run=False)
    grants = owner.inventory(LEAVER)
    assert [g.kind for g in grants].count(TOKEN) == 0 and SSH_KEY not in [g.kind for g in grants]
    assert "side" not in [g.target for g in grants]
    account = grants[-1]
    assert account.kind == ACCOUNT
    assert owner.capabilities.of(ACCOUNT).actions == (MANUAL,)  # type: ignore[union-attr]
    assert account.label.text.startswith("manual: block jdevries")
    with pytest.raises(UnsupportedAction):
        owner.revoke(account, DISABLE)
    walked = {s.path for s in gitlab.fake.seen}
    assert "groups/acme/descendant_groups" not in walked  # ids after the first look-up
    assert not [s for s in gitlab.fake.seen if "memberships" in s.path]


# -- mapping the leaver ---------------------------------------------------------------


def test_mapping_table_wins_over_email(gitlab: RunningGitLab, org: Org) -> None:
    other = gitlab.state.add_user("jan2", "someone@example.test")
    connector = from_config(config(gitlab, usernames={LEAVER.employee_id: "jan2"}), False)
    assert {g.account for g in connector.inventory(LEAVER)} == {str(other.id)}


def test_ambiguous_email_is_refused_and_nothing_is_written(
    gitlab: RunningGitLab, connector: GitLabConnector
) -> None:
    gitlab.state.add_user("jdv", "other@example.test", public_email=LEAVER.email)
    before = gitlab.state.snapshot()
    with pytest.raises(PermanentError, match=r"2 GitLab users have the email .*refusing to guess"):
        connector.inventory(LEAVER)
    assert not connector.verify(LEAVER).clean
    assert gitlab.state.snapshot() == before


@pytest.mark.parametrize("twin", [False, True])
def test_required_mapping_turns_a_missing_or_ambiguous_match_into_a_manual_step(
    gitlab: RunningGitLab, twin: bool
) -> None:
    if twin:
        gitlab.state.add_user("jdv", "other@example.test", public_email=LEAVER.email)
        leaver = LEAVER
    else:
        leaver = Leaver(employee_id="E7", email="new@example.test", display_name="New")
    connector = from_config(config(gitlab, require_mapping=True), dry_run=False)
    (grant,) = connector.inventory(leaver)
    assert (grant.kind, connector.capabilities.of(UNMAPPED).actions) == (UNMAPPED, (MANUAL,))  # type: ignore[union-attr]
    assert grant.label.text.startswith("manual: not mapped (")
    assert leaver.employee_id in grant.label.text
    with pytest.raises(UnsupportedAction):
        connector.revoke(grant)
    verification = connector.verify(leaver)
    assert verification.remaining == [] and not verification.clean


def test_private_email_needs_an_admin_token(gitlab: RunningGitLab) -> None:
    owner = from_config(owner_config(gitlab, usernames={}), dry_run=False)
    assert owner.inventory(LEAVER) == []  # the search does not see private emails
    assert owner.verify(LEAVER).clean


# -- revoking -------------------------------------------------------------------------


def test_tokens_and_keys_are_revoked_and_the_user_blocked(
    connector: GitLabConnector, gitlab: RunningGitLab, org: Org
) -> None:
    for grant in connector.inventory(LEAVER):
        if grant.kind in (TOKEN, SSH_KEY, ACCOUNT):
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED, grant.label
    state = gitlab.state
    assert all(state.tokens[t].revoked for t in org.token_ids)
    assert not [k for k in state.keys.values() if k.user_id == org.leaver.id]
    assert [k.title for k in state.keys.values() if k.user_id == org.colleague.id] == ["lisa's key"]
    assert state.users[org.leaver.id].state == "blocked"
    assert state.users[org.colleague.id].state == "active"
    checks = {c.name.text: c.passed for c in connector.verify(LEAVER).checks}
    assert checks == {
        "no group or project membership": False,
        "account blocked": True,
        "no active personal access token": True,
        "no SSH key": True,
    }


def test_blocking_an_already_blocked_user_is_already_done(
    connector: GitLabConnector, gitlab: RunningGitLab, org: Org
) -> None:
    account = next(g for g in connector.inventory(LEAVER) if g.kind == ACCOUNT)
    gitlab.state.users[org.leaver.id].state = "blocked"  # someone else was quicker
    assert connector.revoke(account).status is OutcomeStatus.ALREADY_DONE
    # GitLab itself answers 201 null for a second block
    blocks = [s for s in gitlab.fake.seen if s.path.endswith("/block")]
    assert blocks == []  # the connector read the state first and sent nothing
    assert gitlab.state.users[org.leaver.id].state == "blocked"


def test_the_last_owner_of_a_group_is_not_removed(
    connector: GitLabConnector, gitlab: RunningGitLab, org: Org
) -> None:
    web = org.nodes["acme/web"]
    gitlab.state.add_member(web, org.leaver, OWNER)
    gitlab.state.add_member(gitlab.state.add_group("solo"), org.leaver, OWNER)
    grants = {g.target: g for g in connector.inventory(LEAVER)}
    with pytest.raises(PermanentError, match="never removes a group's last owner"):
        connector.revoke(grants["solo"])
    solo_id = int(grants["solo"].system_id.removeprefix("group:"))
    assert org.leaver.id in gitlab.state.members[(GROUP, solo_id)]
    # acme/web is a subgroup: olga, Owner of acme, still owns it, so GitLab removes Jan
    assert connector.revoke(grants["acme/web"]).status is OutcomeStatus.REVOKED
    assert org.leaver.id not in gitlab.state.members[(GROUP, web.id)]


def test_a_read_api_token_cannot_remove_and_check_says_so(gitlab: RunningGitLab, org: Org) -> None:
    reader = from_config(config(gitlab, token=READ_TOKEN), dry_run=False)
    health = reader.check()
    assert not health.ok and any("give it the api scope" in m for m in health.messages)
    grant = next(g for g in reader.inventory(LEAVER) if g.kind == PROJECT_MEMBER)
    with pytest.raises(Forbidden, match=r"higher privileges") as raised:
        reader.revoke(grant)
    assert (raised.value.status, raised.value.code) == (403, "insufficient_scope")
    assert org.leaver.id in members(gitlab.state, "acme/web/site", org)


def test_non_admin_check_names_what_it_cannot_do(gitlab: RunningGitLab) -> None:
    health = from_config(owner_config(gitlab), dry_run=False).check()
    assert health.ok
    assert any("cannot be blocked" in m for m in health.messages)
    wrong = from_config(config(gitlab, token=OWNER_TOKEN), dry_run=False).check()
    assert not wrong.ok and "olga is not an administrator" in wrong.messages[0]
    assert ADMIN_TOKEN not in repr(health) + repr(wrong)


def test_dry_run_logs_and_sends_no_write(gitlab: RunningGitLab) -> None:
    dry = from_config(config(gitlab), dry_run=True)
    with capture_logs() as logs:
        outcomes = [dry.revoke(g).status for g in dry.inventory(LEAVER) if g.kind != INHERITED]
    assert set(outcomes) == {OutcomeStatus.DRY_RUN}
    assert not [s for s in gitlab.fake.seen if s.method != "GET"]
    assert ADMIN_TOKEN not in repr(logs)


# -- rate limits and pagination ---------------------------------------------------------


def test_nothing_is_sent_before_the_retry_after_deadline(
    connector: GitLabConnector, gitlab: RunningGitLab
) -> None:
    gitlab.fake.throttle_once(1)
    connector.inventory(LEAVER)
    throttled = next(i for i, s in enumerate(gitlab.fake.seen) if s.status == 429)
    after = gitlab.fake.seen[throttled + 1 :]
    assert after and all(s.at - gitlab.fake.seen[throttled].at >= 1.0 for s in after)


def test_ratelimit_remaining_zero_holds_the_next_request(
    connector: GitLabConnector, gitlab: RunningGitLab
) -> None:
    gitlab.fake.limit_next = 2  # the next success says RateLimit-Remaining: 0, reset in ~2 s
    started = time.time()
    connector.inventory(LEAVER)
    first = gitlab.fake.seen[0]
    later = gitlab.fake.seen[1:]
    reset = int(started + 2)  # what the fake put in RateLimit-Reset (whole seconds)
    assert later and all(s.at - first.at >= reset - started - 0.05 for s in later)


def test_lists_follow_the_pages(
    connector: GitLabConnector, gitlab: RunningGitLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors import gitlab_client

    expected = connector.inventory(LEAVER)
    monkeypatch.setattr(gitlab_client, "PER_PAGE", 1)
    assert connector.inventory(LEAVER) == expected
    assert any("page=2" in s.query for s in gitlab.fake.seen)


def test_registry_style_build_and_secret_not_in_repr(gitlab: RunningGitLab) -> None:
    from connectors.gitlab import KIND

    connector = KIND.build(KIND.config.model_validate(config(gitlab)), True)
    assert isinstance(connector, GitLabConnector) and connector.dry_run
    assert ADMIN_TOKEN not in repr(connector.config)


def test_gitlab_answers_null_to_a_second_block_and_the_connector_reads_it(
    connector: GitLabConnector, gitlab: RunningGitLab, org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    headers = {"PRIVATE-TOKEN": ADMIN_TOKEN}
    url = f"{gitlab.base_url}/users/{org.colleague.id}/block"
    first, second = httpx.post(url, headers=headers), httpx.post(url, headers=headers)
    assert (first.status_code, first.text, second.status_code, second.text) == (
        201,
        "true",
        201,
        "null",
    )
    account = next(g for g in connector.inventory(LEAVER) if g.kind == ACCOUNT)
    gitlab.state.users[org.leaver.id].state = "blocked"
    monkeypatch.setattr(  # the read said active; the block then finds it blocked
        connector, "user_state", lambda client, user_id: GitLabUser(user_id, "jdevries", "active")
    )
    outcome = connector.revoke(account)
    assert outcome.status is OutcomeStatus.ALREADY_DONE and "answered null" in outcome.detail
