"""Cascades against a peer that really cascades: deleting an entry on slapd, whose refint
overlay then takes it out of its groups (see `deleting_ldap.py`); and what scim2-server does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connectors.base import DELETE, Leaver, OutcomeStatus
from connectors.ldap import ACCOUNT, GROUP, PASSWORD, LdapConfig
from connectors.testing import ConnectorConformance
from demo.directory import DemoOrg, LocalDirectory
from tests.connectors.conftest import directory_state
from tests.connectors.deleting_ldap import DeletingLdapConnector
from tests.connectors.scim_peer import ScimPeer, running_peer, seed_org


def deleting(config: dict[str, Any], *, dry_run: bool = False) -> DeletingLdapConnector:
    return DeletingLdapConnector(LdapConfig.model_validate(config), dry_run=dry_run)


class TestDeletingConnectorConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, ldap_config: dict[str, Any]) -> DeletingLdapConnector:
        return deleting(ldap_config)

    @pytest.fixture
    def dry_run_connector(self, ldap_config: dict[str, Any]) -> DeletingLdapConnector:
        return deleting(ldap_config, dry_run=True)

    @pytest.fixture
    def leaver(self, demo_leaver: Leaver) -> Leaver:
        return demo_leaver

    @pytest.fixture
    def peer_state(self, directory: LocalDirectory) -> Callable[[], Any]:
        return lambda: directory_state(directory)

    @pytest.fixture
    def expects_cascades(self) -> bool:
        return True


def test_only_what_refint_removes_is_declared_as_cascading(
    ldap_config: dict[str, Any], demo_leaver: Leaver, demo_org: DemoOrg, directory: LocalDirectory
) -> None:
    grants = deleting(ldap_config).inventory(demo_leaver)
    account = next(g for g in grants if g.kind == ACCOUNT)
    cascading = {g.target for g in grants if g.cascades_from == account.key}
    deploy = f"cn=deploy,{directory.groups_base}"  # a posixGroup: memberUid, not member
    assert deploy in demo_org.leaver_group_dns and deploy not in cascading
    assert cascading == {account.target} | (set(demo_org.leaver_group_dns) - {deploy})
    assert [g.kind for g in grants if g.cascades_from is None] == [ACCOUNT, GROUP]
    assert {g.kind for g in grants if g.cascades_from} == {PASSWORD, GROUP}


def test_deleting_the_account_takes_its_groups_along(
    ldap_config: dict[str, Any], demo_leaver: Leaver, demo_org: DemoOrg, directory: LocalDirectory
) -> None:
    connector = deleting(ldap_config)
    account = next(g for g in connector.inventory(demo_leaver) if g.kind == ACCOUNT)
    assert connector.revoke(account, DELETE).status is OutcomeStatus.REVOKED
    state = directory_state(directory)
    assert demo_org.leaver_dn not in state
    members = [m.decode() for entry in state.values() for m in entry.get("member", [])]
    assert demo_org.leaver_dn not in members
    # the posixGroup still names the leaver: that membership was not declared as cascading
    remaining = [g.target for g in connector.verify(demo_leaver).remaining]
    assert remaining == []  # no entry left to match, so verify checks the groups itself
    deploy = state[f"cn=deploy,{directory.groups_base}"]
    assert b"jdevries" in deploy["memberUid"]


@pytest.fixture
def scim_peer() -> Iterator[ScimPeer]:
    with running_peer() as running:
        yield running


def test_scim2_server_keeps_a_deleted_user_in_its_groups(scim_peer: ScimPeer) -> None:
    """Why the SCIM connector declares no cascade: RFC 7644 does not oblige a server to drop
    a deleted user from its groups, and the test peer does not."""
    org = seed_org(scim_peer)
    assert scim_peer.client().delete(f"Users/{org.leaver_id}").status_code == 204
    assert org.leaver_id in scim_peer.member_ids(org.groups["developers"])
