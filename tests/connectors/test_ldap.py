"""The OpenLDAP connector against a real slapd (memberof, refint and ppolicy overlays)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ldap3
import pytest
from ldap3.core.exceptions import LDAPBindError
from pydantic import ValidationError
from structlog.testing import capture_logs

from connectors.base import (
    DELETE,
    Effect,
    Leaver,
    OutcomeStatus,
    PermanentError,
    SubjectNotFound,
    TransientError,
    UnsupportedAction,
)
from connectors.ldap import (
    ACCOUNT,
    GROUP,
    PASSWORD,
    LdapConfig,
    LdapConnector,
    build_tls,
    from_config,
    people_from_config,
)
from connectors.ldap_people import normalise_language
from connectors.registry import build_connector, build_people_directory
from connectors.testing import ConnectorConformance
from demo.directory import DemoOrg, LocalDirectory, free_port, seed_demo_org
from tests.connectors.conftest import directory_state


class TestLdapConformance(ConnectorConformance):
    @pytest.fixture
    def connector(self, ldap_config: dict[str, Any]) -> LdapConnector:
        return from_config(ldap_config, dry_run=False)

    @pytest.fixture
    def dry_run_connector(self, ldap_config: dict[str, Any]) -> LdapConnector:
        return from_config(ldap_config, dry_run=True)

    @pytest.fixture
    def leaver(self, demo_leaver: Leaver) -> Leaver:
        return demo_leaver

    @pytest.fixture
    def peer_state(self, directory: LocalDirectory) -> Callable[[], Any]:
        return lambda: directory_state(directory)


# -- helpers: look at the real server ---------------------------------------------------


def read_entry(directory: LocalDirectory, dn: str, attributes: list[str]) -> dict[str, list[str]]:
    conn = directory.admin_connection()
    try:
        conn.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=attributes)
        raw = conn.response[0]["raw_attributes"]
        return {name: [v.decode() for v in values] for name, values in raw.items()}
    finally:
        conn.unbind()


def can_bind(directory: LocalDirectory, dn: str, password: str) -> bool:
    conn = ldap3.Connection(ldap3.Server(directory.url), user=dn, password=password)
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def grant_of(connector: LdapConnector, leaver: Leaver, kind: str, target: str | None = None) -> Any:
    return next(
        g
        for g in connector.inventory(leaver)
        if g.kind == kind and (target is None or g.target == target)
    )


@pytest.fixture
def connector(ldap_config: dict[str, Any]) -> LdapConnector:
    return from_config(ldap_config, dry_run=False)


# -- finding the leaver ---------------------------------------------------------------


def test_inventory_lists_account_password_and_every_group(
    connector: LdapConnector, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    grants = connector.inventory(demo_leaver)
    assert [g.kind for g in grants[:2]] == [ACCOUNT, PASSWORD]
    assert {g.account for g in grants} == {demo_org.leaver_dn}
    memberships = [g.target for g in grants if g.kind == GROUP]
    assert memberships == demo_org.leaver_group_dns
    assert "Member of deploy" in [g.label.text for g in grants]
    assert [g.effect for g in grants[:2]] == [Effect.SIGN_IN, Effect.CREDENTIAL]


def test_grants_carry_the_entry_uuid(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    uuids = {
        dn: entry["entryUUID"][0].decode()
        for dn, entry in directory_state(directory).items()
        if dn == demo_org.leaver_dn or dn in demo_org.leaver_group_dns
    }
    grants = connector.inventory(demo_leaver)
    assert {g.system_id for g in grants} == set(uuids.values())
    assert grants[0].key == f"directory|account|{uuids[demo_org.leaver_dn]}"
    assert all(g.revoke_data["account_uuid"] == uuids[demo_org.leaver_dn] for g in grants)


def test_a_renamed_account_is_still_found_by_its_uuid(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    account = grant_of(connector, demo_leaver, ACCOUNT)
    conn = directory.admin_connection()
    assert conn.modify_dn(demo_org.leaver_dn, "uid=jdevries-old")
    conn.unbind()
    assert connector.revoke(account).status is OutcomeStatus.REVOKED
    renamed = f"uid=jdevries-old,{directory.users_base}"
    assert read_entry(directory, renamed, ["pwdAccountLockedTime"]) == {
        "pwdAccountLockedTime": ["000001010000Z"]
    }


def test_delete_is_not_supported_and_refused_with_a_clear_error(
    connector: LdapConnector, ldap_config: dict[str, Any], demo_leaver: Leaver
) -> None:
    capability = connector.capabilities.of(ACCOUNT)
    assert capability is not None and DELETE not in capability.actions
    with pytest.raises(UnsupportedAction, match="cannot 'delete' a grant of kind 'account'"):
        connector.revoke(grant_of(connector, demo_leaver, ACCOUNT), DELETE)
    with pytest.raises(ValidationError, match="cannot delete them") as raised:
        build_connector({**ldap_config, "on_leave": "delete"})
    assert "connector 'directory' (kind ldap)" in str(raised.value)


@pytest.mark.parametrize("hostile", ["*", "*)(uid=*", "E1042)(|(employeeNumber=*", "\\2a"])
def test_filter_values_are_escaped(connector: LdapConnector, hostile: str) -> None:
    leaver = Leaver(employee_id=hostile, email=f"{hostile}@example.test", display_name="Mallory")
    assert connector.inventory(leaver) == []
    assert connector.verify(leaver).clean


def test_match_by_mail(ldap_config: dict[str, Any], demo_leaver: Leaver, demo_org: DemoOrg) -> None:
    connector = from_config({**ldap_config, "match_attribute": "mail"}, dry_run=False)
    by_mail = Leaver(
        employee_id="unknown-to-the-directory", email=demo_leaver.email, display_name="Jan"
    )
    assert {g.account for g in connector.inventory(by_mail)} == {demo_org.leaver_dn}


def test_two_matching_entries_are_refused_by_name(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    twin = f"uid=jdevries2,{directory.users_base}"
    conn = directory.admin_connection()
    conn.add(
        twin,
        ["inetOrgPerson"],
        {"uid": "jdevries2", "cn": "Jan", "sn": "de Vries", "employeeNumber": "E1042"},
    )
    conn.unbind()
    with pytest.raises(PermanentError, match="uid=jdevries2"):
        connector.inventory(demo_leaver)


# -- revoking, seen at the server -----------------------------------------------------


def test_lock_refuses_the_original_password(
    user_password: str,
    connector: LdapConnector,
    directory: LocalDirectory,
    demo_leaver: Leaver,
    demo_org: DemoOrg,
) -> None:
    assert can_bind(directory, demo_org.leaver_dn, user_password)
    outcome = connector.revoke(grant_of(connector, demo_leaver, ACCOUNT))
    assert outcome.status is OutcomeStatus.REVOKED
    assert read_entry(directory, demo_org.leaver_dn, ["pwdAccountLockedTime"]) == {
        "pwdAccountLockedTime": ["000001010000Z"]
    }
    assert not can_bind(directory, demo_org.leaver_dn, user_password)
    assert connector.inventory(demo_leaver)[0].kind is PASSWORD


def test_password_replacement_refuses_the_original_password(
    user_password: str,
    connector: LdapConnector,
    directory: LocalDirectory,
    demo_leaver: Leaver,
    demo_org: DemoOrg,
) -> None:
    with capture_logs() as logs:
        outcome = connector.revoke(grant_of(connector, demo_leaver, PASSWORD))
    assert outcome.status is OutcomeStatus.REVOKED
    assert not can_bind(directory, demo_org.leaver_dn, user_password)
    assert read_entry(directory, demo_org.leaver_dn, ["pwdReset"]) == {"pwdReset": ["TRUE"]}
    writes = [e for e in logs if e["event"] == "directory write"]
    assert [e["attributes"] for e in writes] == [["pwdReset", "userPassword"]]
    assert all(e["connector"] == "directory" and e["dn"] == demo_org.leaver_dn for e in writes)
    assert [e["status"] for e in logs if e["event"] == "grant revoked"] == ["revoked"]


def test_replacing_the_password_keeps_the_account_locked(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    # ppolicy drops pwdAccountLockedTime whenever the password changes
    account, credential = connector.inventory(demo_leaver)[:2]
    connector.revoke(account)
    connector.revoke(credential)
    assert read_entry(directory, demo_org.leaver_dn, ["pwdAccountLockedTime"]) == {
        "pwdAccountLockedTime": ["000001010000Z"]
    }


def test_posix_group_member_uid_is_removed(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    deploy = f"cn=deploy,{directory.groups_base}"
    outcome = connector.revoke(grant_of(connector, demo_leaver, GROUP, deploy))
    assert outcome.status is OutcomeStatus.REVOKED
    assert sorted(read_entry(directory, deploy, ["memberUid"])["memberUid"]) == [
        "bmulder",
        "ddeboer",
    ]


def test_group_holding_both_member_and_member_uid(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    # as in rfc2307bis directories, where posixGroup is auxiliary to groupOfNames
    hybrid = f"cn=hybrid,{directory.groups_base}"
    conn = directory.admin_connection()
    conn.add(
        hybrid,
        ["groupOfNames", "extensibleObject"],
        {"cn": "hybrid", "member": [demo_org.leaver_dn, f"uid=lsmit,{directory.users_base}"]},
    )
    conn.modify(hybrid, {"memberUid": [(ldap3.MODIFY_ADD, ["jdevries", "lsmit"])]})
    conn.unbind()
    grant = grant_of(connector, demo_leaver, GROUP, hybrid)
    assert connector.revoke(grant).status is OutcomeStatus.REVOKED
    assert read_entry(directory, hybrid, ["member", "memberUid"]) == {
        "member": [f"uid=lsmit,{directory.users_base}"],
        "memberUid": ["lsmit"],
    }
    assert connector.revoke(grant).status is OutcomeStatus.ALREADY_DONE


def test_group_of_names_member_and_member_of_are_removed(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    developers = f"cn=developers,{directory.groups_base}"
    connector.revoke(grant_of(connector, demo_leaver, GROUP, developers))
    assert demo_org.leaver_dn not in read_entry(directory, developers, ["member"])["member"]
    assert developers not in read_entry(directory, demo_org.leaver_dn, ["memberOf"])["memberOf"]


def test_last_member_is_replaced_by_the_placeholder(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    legacy = f"cn=legacy-ftp,{directory.groups_base}"
    outcome = connector.revoke(grant_of(connector, demo_leaver, GROUP, legacy))
    assert outcome.status is OutcomeStatus.REVOKED
    assert "last" in outcome.detail
    assert read_entry(directory, legacy, ["member"]) == {"member": [""]}
    assert connector.revoke(outcome.grant).status is OutcomeStatus.ALREADY_DONE


def test_last_member_with_a_named_placeholder(
    ldap_config: dict[str, Any], directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    nobody = f"cn=nobody,{directory.suffix}"
    connector = from_config({**ldap_config, "empty_group_placeholder": nobody}, dry_run=False)
    legacy = f"cn=legacy-ftp,{directory.groups_base}"
    connector.revoke(grant_of(connector, demo_leaver, GROUP, legacy))
    assert read_entry(directory, legacy, ["member"]) == {"member": [nobody]}


def test_last_member_without_placeholder_is_left_for_a_person(
    ldap_config: dict[str, Any], directory: LocalDirectory, demo_leaver: Leaver, demo_org: DemoOrg
) -> None:
    connector = from_config({**ldap_config, "empty_group_placeholder": None}, dry_run=False)
    legacy = f"cn=legacy-ftp,{directory.groups_base}"
    with pytest.raises(PermanentError, match="last member of cn=legacy-ftp"):
        connector.revoke(grant_of(connector, demo_leaver, GROUP, legacy))
    assert read_entry(directory, legacy, ["member"]) == {"member": [demo_org.leaver_dn]}


def test_no_secret_is_logged(
    user_password: str, ldap_config: dict[str, Any], connector: LdapConnector, demo_leaver: Leaver
) -> None:
    with capture_logs() as logs:
        for grant in connector.inventory(demo_leaver):
            connector.revoke(grant)
        connector.verify(demo_leaver)
    text = repr(logs)
    assert logs and ldap_config["bind_password"] not in text and user_password not in text
    assert "userPassword" in text  # the attribute name is logged, its value never


# -- proving it --------------------------------------------------------------------


def test_verify_probes_sign_in_after_revoke(connector: LdapConnector, demo_leaver: Leaver) -> None:
    for grant in connector.inventory(demo_leaver):
        connector.revoke(grant)
    checks = {c.name.text: c for c in connector.verify(demo_leaver).checks}
    assert checks["sign-in refused"].passed, checks["sign-in refused"].detail
    assert checks["lockout policy enforced"].passed
    assert connector.inventory(demo_leaver) == []  # the probe leaves no credential behind


def test_missing_lockout_policy_is_reported(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    conn = directory.admin_connection()
    conn.delete(directory.default_policy_dn)
    conn.unbind()

    health = connector.check()
    assert not health.ok
    assert any(directory.default_policy_dn in m and "does not exist" in m for m in health.messages)

    for grant in connector.inventory(demo_leaver):
        connector.revoke(grant)
    verification = connector.verify(demo_leaver)
    checks = {c.name.text: c for c in verification.checks}
    assert not checks["lockout policy enforced"].passed
    # without the policy the lock is ignored: the probe signs in, and says so
    assert not checks["sign-in refused"].passed
    assert "SUCCEEDED" in str(checks["sign-in refused"].detail)
    assert not verification.clean


def test_policy_without_lockout_is_reported(
    connector: LdapConnector, directory: LocalDirectory
) -> None:
    conn = directory.admin_connection()
    conn.modify(directory.default_policy_dn, {"pwdLockout": [(ldap3.MODIFY_REPLACE, ["FALSE"])]})
    conn.unbind()
    health = connector.check()
    assert not health.ok and "pwdLockout: TRUE" in health.messages[0]


def test_unset_lockout_policy_dn_is_reported(ldap_config: dict[str, Any]) -> None:
    health = from_config({**ldap_config, "lockout_policy_dn": None}, dry_run=False).check()
    assert not health.ok and "lockout_policy_dn" in health.messages[0]


def test_verify_before_revoke_does_not_touch_the_password(
    user_password: str, connector: LdapConnector, demo_leaver: Leaver, directory: LocalDirectory
) -> None:
    dn = f"uid=jdevries,{directory.users_base}"
    stored = read_entry(directory, dn, ["userPassword"])
    checks = {c.name.text: c for c in connector.verify(demo_leaver).checks}
    assert not checks["sign-in refused"].passed
    assert "not attempted" in str(checks["sign-in refused"].detail)
    assert can_bind(directory, dn, user_password)

    connector.revoke(grant_of(connector, demo_leaver, ACCOUNT))  # locked, not replaced
    checks = {c.name.text: c for c in connector.verify(demo_leaver).checks}
    assert "not attempted" in str(checks["sign-in refused"].detail)
    assert read_entry(directory, dn, ["userPassword"]) == stored


# -- errors ------------------------------------------------------------------------


def test_closed_port_is_transient(ldap_config: dict[str, Any], demo_leaver: Leaver) -> None:
    connector = from_config(
        {**ldap_config, "url": f"ldap://127.0.0.1:{free_port()}"}, dry_run=False
    )
    with pytest.raises(TransientError):
        connector.inventory(demo_leaver)
    health = connector.check()
    assert not health.ok and "connect" in health.messages[0]


def test_stopped_server_is_transient(
    connector: LdapConnector, directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    grant = grant_of(connector, demo_leaver, ACCOUNT)
    directory.stop()
    with pytest.raises(TransientError):
        connector.revoke(grant)


def test_missing_write_rights_are_permanent(
    user_password: str,
    ldap_config: dict[str, Any],
    connector: LdapConnector,
    demo_leaver: Leaver,
    directory: LocalDirectory,
) -> None:
    grant = grant_of(connector, demo_leaver, GROUP)
    reader = from_config(
        {
            **ldap_config,
            "bind_dn": f"uid=sjansen,{directory.users_base}",
            "bind_password": user_password,
        },
        dry_run=False,
    )
    assert reader.inventory(demo_leaver) == connector.inventory(demo_leaver)  # users may read
    with pytest.raises(PermanentError, match="insufficientAccessRights"):
        reader.revoke(grant)


def test_wrong_bind_password_is_permanent(ldap_config: dict[str, Any], demo_leaver: Leaver) -> None:
    connector = from_config({**ldap_config, "bind_password": "wrong"}, dry_run=False)
    with pytest.raises(PermanentError, match="bind_password"):
        connector.inventory(demo_leaver)
    assert not connector.check().ok


def test_missing_base_is_reported(ldap_config: dict[str, Any], directory: LocalDirectory) -> None:
    health = from_config(
        {**ldap_config, "groups_base": f"ou=teams,{directory.suffix}"}, dry_run=False
    ).check()
    assert not health.ok and "groups_base" in health.messages[0]


def test_missing_users_base_is_not_mistaken_for_a_missing_leaver(
    ldap_config: dict[str, Any], directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    connector = from_config({**ldap_config, "users_base": f"ou=staff,{directory.suffix}"}, False)
    with pytest.raises(PermanentError, match="noSuchObject") as raised:
        connector.inventory(demo_leaver)
    assert not isinstance(raised.value, SubjectNotFound)


def test_injected_connection_factory_is_used(
    ldap_config: dict[str, Any], directory: LocalDirectory, demo_leaver: Leaver
) -> None:
    opened: list[ldap3.Connection] = []

    def connect() -> ldap3.Connection:
        conn = ldap3.Connection(
            ldap3.Server(directory.url),
            user=directory.admin_dn,
            password=directory.admin_password,
            auto_bind=ldap3.AUTO_BIND_NO_TLS,
        )
        opened.append(conn)
        return conn

    connector = LdapConnector(LdapConfig.model_validate(ldap_config), connect=connect)
    assert connector.inventory(demo_leaver)
    assert len(opened) == 1 and opened[0].closed


def test_injected_factory_errors_are_mapped(
    ldap_config: dict[str, Any], demo_leaver: Leaver
) -> None:
    def refuse() -> ldap3.Connection:
        raise LDAPBindError("automatic bind not successful - invalidCredentials")

    connector = LdapConnector(LdapConfig.model_validate(ldap_config), connect=refuse)
    with pytest.raises(PermanentError, match="invalidCredentials"):
        connector.inventory(demo_leaver)


# -- configuration -------------------------------------------------------------------


def test_registry_builds_the_ldap_connector(ldap_config: dict[str, Any]) -> None:
    connector = build_connector(ldap_config, dry_run=True)
    assert isinstance(connector, LdapConnector) and connector.dry_run
    assert build_people_directory(ldap_config).find_person("E0007") is not None


@pytest.mark.parametrize(
    "change",
    [
        {"surprise": True},
        {"url": "http://127.0.0.1"},
        {"users_base": "not a dn"},
        {"match_attribute": "cn"},
        {"url": "ldaps://ldap.example.test", "start_tls": True},
        {"ca_file": "/nonexistent/ca.pem"},
        {"empty_group_placeholder": "not a dn"},
        {"timeout_seconds": 0},
    ],
)
def test_bad_config_is_refused(ldap_config: dict[str, Any], change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        from_config({**ldap_config, **change}, dry_run=False)


def test_secret_is_not_in_the_config_repr(ldap_config: dict[str, Any]) -> None:
    config = LdapConfig.model_validate(ldap_config)
    assert ldap_config["bind_password"] not in repr(config)


def test_plain_ldap_has_no_tls(ldap_config: dict[str, Any]) -> None:
    assert build_tls(LdapConfig.model_validate(ldap_config)) is None


@pytest.mark.parametrize("tls", [{"url": "ldaps://ldap.example.test"}, {"start_tls": True}])
def test_tls_verifies_the_server_certificate(
    ldap_config: dict[str, Any], tmp_path: Path, tls: dict[str, Any]
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder; only the path is used here\n")
    tls_config = build_tls(LdapConfig.model_validate({**ldap_config, **tls, "ca_file": str(ca)}))
    assert tls_config is not None
    assert tls_config.validate == ssl.CERT_REQUIRED
    assert tls_config.ca_certs_file == str(ca)
    system_cas = build_tls(LdapConfig.model_validate({**ldap_config, **tls}))
    assert system_cas is not None and system_cas.validate == ssl.CERT_REQUIRED


# -- the people directory ----------------------------------------------------------------


def test_find_person(ldap_config: dict[str, Any]) -> None:
    people = people_from_config(ldap_config)
    zoe = people.find_person("E1020")
    assert zoe is not None
    assert (zoe.display_name, zoe.email, zoe.language) == (
        "Zoë Kuipers",
        "zkuipers@example.test",
        "en",
    )
    assert people.find_person("E9999") is None
    assert people.find_person("*") is None


def test_managers_from_group_and_list(ldap_config: dict[str, Any], demo_org: DemoOrg) -> None:
    from_group = people_from_config(ldap_config).managers()
    assert [p.employee_id for p in from_group] == demo_org.manager_ids
    both = people_from_config({**ldap_config, "managers": ["E1001", "E0007", "E9999"]}).managers()
    assert [p.employee_id for p in both] == sorted({*demo_org.manager_ids, "E1001"})
    only_list = people_from_config(
        {**ldap_config, "managers_group": None, "managers": ["E1013"]}
    ).managers()
    assert [p.display_name for p in only_list] == ["Julia Dekker"]


def test_managers_group_must_exist(ldap_config: dict[str, Any], directory: LocalDirectory) -> None:
    people = people_from_config(
        {**ldap_config, "managers_group": f"cn=bosses,{directory.groups_base}"}
    )
    with pytest.raises(PermanentError, match="cn=bosses"):
        people.managers()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nl", "nl"),
        ("nl-NL", "nl"),
        ("EN_gb", "en"),
        ("en;q=0.8, nl", "en"),
        ("de", None),
        ("", None),
        (None, None),
    ],
)
def test_language_is_normalised(value: str | None, expected: str | None) -> None:
    assert normalise_language(value) == expected


# -- TLS against the real server ---------------------------------------------------------


JAN = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")


def start_tls_directory(tmp_path: Path, files: dict[str, Path]) -> LocalDirectory:
    directory = LocalDirectory.start(
        tmp_path / "tls-ldap", admin_password="admin-secret", tls=(files["cert"], files["key"])
    )
    seed_demo_org(directory, password="irrelevant")
    return directory


@pytest.mark.parametrize("mode", ["start_tls", "ldaps"])
def test_tls_with_the_right_ca(
    tmp_path: Path, certificates: dict[str, dict[str, Path]], mode: str
) -> None:
    with start_tls_directory(tmp_path, certificates["good"]) as directory:
        tls = {"start_tls": True} if mode == "start_tls" else {"url": directory.ldaps_url}
        config = directory.connector_config(**tls, ca_file=str(certificates["good"]["ca"]))
        assert len(from_config(config, dry_run=False).inventory(JAN)) == 7


@pytest.mark.parametrize("mode", ["start_tls", "ldaps"])
@pytest.mark.parametrize("problem", ["unknown CA", "system CAs", "other name"])
def test_tls_refuses_an_unverified_server(
    tmp_path: Path,
    certificates: dict[str, dict[str, Path]],
    mode: str,
    problem: str,
) -> None:
    served = certificates["elsewhere" if problem == "other name" else "good"]
    trusted = {"unknown CA": certificates["other"]["ca"], "system CAs": None}.get(
        problem, served["ca"]
    )
    with start_tls_directory(tmp_path, served) as directory:
        tls = {"start_tls": True} if mode == "start_tls" else {"url": directory.ldaps_url}
        config = directory.connector_config(**tls, ca_file=str(trusted) if trusted else None)
        connector = from_config(config, dry_run=False)
        with pytest.raises(PermanentError, match="certificate"):
            connector.inventory(JAN)
        assert not connector.check().ok
