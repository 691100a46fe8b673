# ruff: noqa: F811 - the Samba fixtures are imported from tests/connectors/samba_dc.py
"""The Active Directory connector against a real Samba 4 AD DC (LDAPS, real AD semantics).

Each test gets its own copy of a DC provisioned and seeded once per session
(tests/connectors/samba_dc.py); assertions read the DC as Administrator, not the connector.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap3
import pytest
from pydantic import ValidationError

from connectors.active_directory import (
    ACCOUNT,
    GROUP,
    NESTED,
    PASSWORD,
    PRIMARY,
    ActiveDirectoryConnector,
    from_config,
)
from connectors.active_directory_client import BIND_REASONS, bind_reason
from connectors.base import DELETE, KEEP, Leaver, OutcomeStatus, PermanentError
from connectors.testing import ConnectorConformance, in_plan_order, sent
from demo.samba_ad import DISABLED_OU, GROUPS_OU, STAFF_OU, SambaDC
from tests.connectors.conftest import certificates  # noqa: F401 - a fixture
from tests.connectors.samba_dc import (  # noqa: F401 - fixtures
    ad_config,
    ad_leaver,
    ad_state,
    admin_do,
    read_user,
    samba_dc,
    samba_golden,
    samba_module_dc,
)

LEAVER_FILTER = "(sAMAccountName=jdevries)"
USER_ATTRIBUTES = ["userAccountControl", "accountExpires", "memberOf", "pwdLastSet", "badPwdCount"]


class TestActiveDirectoryConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, ad_config: dict[str, Any]) -> ActiveDirectoryConnector:
        return from_config(ad_config, dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, ad_config: dict[str, Any]) -> ActiveDirectoryConnector:
        return from_config(ad_config, dry_run=True)

    @pytest.fixture
    def leaver(self, ad_leaver: Leaver) -> Leaver:
        return ad_leaver

    @pytest.fixture
    def peer_state(self, samba_dc: SambaDC) -> Callable[[], Any]:
        return lambda: ad_state(samba_dc)

    @pytest.fixture
    def expects_cascades(self) -> bool:
        return True


@pytest.fixture
def connector(ad_config: dict[str, Any]) -> ActiveDirectoryConnector:
    return from_config(ad_config, dry_run=False)


def revoke_all(connector: ActiveDirectoryConnector, leaver: Leaver) -> list[Any]:
    grants = in_plan_order(sent(connector, connector.inventory(leaver)))
    return [connector.revoke(grant) for grant in grants]


def group_dn(name: str) -> str:
    return f"CN={name},{GROUPS_OU}"


# -- inventory ----------------------------------------------------------------------


def test_inventory_lists_direct_nested_and_primary_groups(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
) -> None:
    grants = connector.inventory(ad_leaver)
    by_kind = {kind: [g for g in grants if g.kind == kind] for kind in {g.kind for g in grants}}
    assert [g.kind for g in grants[:3]] == [ACCOUNT, PASSWORD, PRIMARY]
    assert [g.target for g in by_kind[GROUP]] == [
        group_dn(n) for n in ("developers", "laravel-admins", "legacy-ftp", "vpn-users")
    ]
    key_of = {g.target: g.key for g in by_kind[GROUP]}
    # all-staff is reached through developers and vpn-users: the first by DN is chosen
    assert {g.target: g.cascades_from for g in by_kind[NESTED]} == {
        group_dn("all-staff"): key_of[group_dn("developers")],
        group_dn("engineering"): key_of[group_dn("developers")],
        group_dn("remote-access"): key_of[group_dn("vpn-users")],
    }
    primary = by_kind[PRIMARY][0]
    assert primary.target == "CN=Domain Users,CN=Users,DC=example,DC=test"
    assert "cannot be removed through member" in primary.label.text
    assert connector.capabilities.of(PRIMARY).actions == (KEEP,)  # type: ignore[union-attr]
    assert "expires never" in by_kind[ACCOUNT][0].label.text


def test_match_values_are_escaped(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
) -> None:
    assert connector.inventory(ad_leaver), "the real value finds Jan"
    for hostile in ["*", "*)(", "E1042)(|(employeeID=*", "\\2a", "E104*", "E1042)(cn=*"]:
        nobody = ad_leaver.model_copy(update={"employee_id": hostile})
        assert connector.inventory(nobody) == [], hostile
        assert connector.verify(nobody).clean, hostile


def test_leaver_found_by_email_through_user_principal_name(
    ad_config: dict[str, Any],
    ad_leaver: Leaver,
) -> None:
    by_upn = from_config({**ad_config, "match_attribute": "userPrincipalName"}, dry_run=False)
    assert {g.account for g in by_upn.inventory(ad_leaver)} == {"jdevries"}
    unknown = ad_leaver.model_copy(update={"email": "nobody@example.test"})
    assert by_upn.inventory(unknown) == []


# -- revoking -------------------------------------------------------------------------


def test_revoke_disables_expires_replaces_and_parks_keeping_other_flags(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    before = read_user(samba_dc, LEAVER_FILTER, ["distinguishedName"])
    assert before is not None
    admin_do(  # DONT_EXPIRE_PASSWORD must survive the disable
        samba_dc,
        lambda c: c.modify(
            before["dn"], {"userAccountControl": [(ldap3.MODIFY_REPLACE, ["66048"])]}
        ),
    )
    outcomes = revoke_all(connector, ad_leaver)
    assert [o.status for o in outcomes] == [OutcomeStatus.REVOKED] * len(outcomes)
    first = json.loads(outcomes[0].detail.split("before: ", 1)[1])  # the snapshot
    assert first["userAccountControl"] == 66048 and len(first["memberOf"]) == 4
    assert first["dn"] == before["dn"]
    after = read_user(samba_dc, LEAVER_FILTER, USER_ATTRIBUTES)
    assert after is not None
    assert after["dn"] == f"CN=Jan de Vries,{DISABLED_OU}"
    assert after["userAccountControl"] == ["66050"]
    assert after["memberOf"] == []
    assert after["pwdLastSet"] == ["0"]  # set by an administrator
    assert after["accountExpires"] not in (["0"], ["9223372036854775807"])


def test_an_already_disabled_user_is_still_expired_and_moved(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    dn = f"CN=Jan de Vries,{STAFF_OU}"
    admin_do(
        samba_dc, lambda c: c.modify(dn, {"userAccountControl": [(ldap3.MODIFY_REPLACE, ["514"])]})
    )
    account = next(g for g in connector.inventory(ad_leaver) if g.kind == ACCOUNT)
    outcome = connector.revoke(account)
    assert outcome.status is OutcomeStatus.REVOKED
    assert "userAccountControl 512" not in outcome.detail and "moved to" in outcome.detail
    assert connector.revoke(account).status is OutcomeStatus.ALREADY_DONE
    after = read_user(samba_dc, LEAVER_FILTER, USER_ATTRIBUTES)
    assert after is not None and after["userAccountControl"] == ["514"]
    assert after["dn"].endswith(DISABLED_OU)


def test_a_missing_disabled_ou_changes_nothing(
    ad_config: dict[str, Any],
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    missing = "OU=Nope,DC=example,DC=test"
    connector = from_config({**ad_config, "disabled_ou": missing}, dry_run=False)
    health = connector.check()
    assert not health.ok
    assert any(f"disabled_ou {missing} does not exist" in m for m in health.messages)
    state = ad_state(samba_dc)
    grants = in_plan_order(sent(connector, connector.inventory(ad_leaver)))
    for grant in grants:
        with pytest.raises(PermanentError, match=r"does not exist .*nothing was changed"):
            connector.revoke(grant)
    assert ad_state(samba_dc) == state


def test_a_dn_that_changed_after_the_plan_still_revokes(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    grants = in_plan_order(sent(connector, connector.inventory(ad_leaver)))

    def move(conn: ldap3.Connection) -> None:
        conn.add("OU=Moved,DC=example,DC=test", ["organizationalUnit"])
        conn.modify_dn(
            f"CN=Jan de Vries,{STAFF_OU}",
            "CN=Jan de Vries",
            new_superior="OU=Moved,DC=example,DC=test",
        )

    admin_do(samba_dc, move)
    assert all(connector.revoke(g).status is OutcomeStatus.REVOKED for g in grants)
    after = read_user(samba_dc, LEAVER_FILTER, USER_ATTRIBUTES)
    assert after is not None and after["dn"] == f"CN=Jan de Vries,{DISABLED_OU}"
    assert after["memberOf"] == []
    assert connector.verify(ad_leaver).clean


def test_delete_when_the_policy_asks_for_it(
    ad_config: dict[str, Any],
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    connector = from_config({**ad_config, "on_leave": DELETE}, dry_run=False)
    account = next(g for g in connector.inventory(ad_leaver) if g.kind == ACCOUNT)
    outcome = connector.revoke(account)
    assert outcome.status is OutcomeStatus.REVOKED and outcome.action == DELETE
    assert read_user(samba_dc, LEAVER_FILTER, ["cn"]) is None
    assert connector.inventory(ad_leaver) == []
    assert connector.revoke(account).status is OutcomeStatus.ALREADY_DONE
    assert connector.verify(ad_leaver).clean


# -- verifying ------------------------------------------------------------------------


def test_verify_proves_the_refused_sign_in_without_counting_bad_passwords(
    connector: ActiveDirectoryConnector,
    ad_leaver: Leaver,
    samba_dc: SambaDC,
) -> None:
    early = connector.verify(ad_leaver)
    probe = next(c for c in early.checks if c.name.id == "active_directory.check.sign_in_refused")
    assert not probe.passed and "not disabled yet" in str(probe.detail)
    revoke_all(connector, ad_leaver)
    verification = connector.verify(ad_leaver)
    assert verification.clean
    probe = next(c for c in verification.checks if c.name.id.endswith("sign_in_refused"))
    assert "account disabled (data 533)" in str(probe.detail)
    after = read_user(samba_dc, LEAVER_FILTER, USER_ATTRIBUTES)
    assert after is not None and after["badPwdCount"] == ["0"]
    assert after["pwdLastSet"] == ["0"]


@pytest.mark.parametrize("code", sorted(BIND_REASONS))
def test_bind_data_codes_read_as_reasons(code: str) -> None:
    message = f"80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}"
    assert bind_reason(message) == (code, BIND_REASONS[code])


def test_a_wrong_service_password_is_reported_by_check(ad_config: dict[str, Any]) -> None:
    health = from_config({**ad_config, "bind_password": "wrong-Password-1"}, dry_run=False).check()
    assert not health.ok
    assert (
        "refused the bind as Administrator@EXAMPLE.TEST (invalid credentials, data 52e)"
        in (health.messages[0])
    )


# -- TLS --------------------------------------------------------------------------------


def test_a_certificate_from_another_ca_fails_check_clearly(
    ad_config: dict[str, Any],
    certificates: dict[str, dict[str, Path]],
    samba_dc: SambaDC,
) -> None:
    other_ca = str(certificates["other"]["ca"])
    health = from_config({**ad_config, "ca_file": other_ca}, dry_run=False).check()
    assert not health.ok
    assert samba_dc.address in health.messages[0]
    assert "not signed by a CA in" in health.messages[0] and "set ca_file" in health.messages[0]


def test_a_certificate_for_another_name_fails_check_clearly(
    ad_config: dict[str, Any],
    samba_dc: SambaDC,
) -> None:
    health = from_config(
        {**ad_config, "tls_server_name": "dc9.example.test"}, dry_run=False
    ).check()
    assert not health.ok
    assert samba_dc.address in health.messages[0]
    assert "does not name 'dc9.example.test'; set tls_server_name" in health.messages[0]


def test_start_tls_works_and_plain_ldap_is_refused(
    ad_config: dict[str, Any],
    samba_dc: SambaDC,
) -> None:
    plain = {**ad_config, "url": f"ldap://{samba_dc.address}:389"}
    with pytest.raises(ValidationError, match="must not travel in clear"):
        from_config(plain, dry_run=False)
    assert from_config({**plain, "start_tls": True}, dry_run=False).check().ok
