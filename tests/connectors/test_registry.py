"""The registry: built-in kinds, kinds other packages register (entry points), typed
configs whose errors name the connector and field, and where secrets come from."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors import registry
from connectors.config import resolve_sources
from connectors.ldap import LdapConnector
from connectors.registry import (
    ConnectorPluginError,
    UnknownConnectorKind,
    build_connector,
    build_people_directory,
    describe_kinds,
    known_kinds,
)
from connectors.scim import ScimConnector

SCIM = {"kind": "scim", "name": "webapp", "base_url": "https://scim.example.test/v2"}
LDAP = {
    "kind": "ldap",
    "url": "ldap://127.0.0.1:1",
    "bind_dn": "cn=offboarding,dc=example,dc=test",
    "bind_password": "directory-secret-1",
    "users_base": "ou=people,dc=example,dc=test",
    "groups_base": "ou=groups,dc=example,dc=test",
}


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a distribution on sys.path that registers connector kinds, as pip would."""

    def install(entry_points: str, module: str) -> None:
        dist = tmp_path / "offboarding_extra-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: offboarding-extra\n")
        (dist / "entry_points.txt").write_text(f"[offboarding.connectors]\n{entry_points}\n")
        (tmp_path / "offboarding_extra.py").write_text(textwrap.dedent(module))
        monkeypatch.syspath_prepend(str(tmp_path))
        registry.reload_kinds()

    yield install
    sys.modules.pop("offboarding_extra", None)  # each test installs its own
    registry.reload_kinds()


PLUGIN = """
    from typing import Literal

    from connectors.config import ConnectorKind
    from connectors.ldap import LdapConfig, LdapConnector


    class DirectoryTwoConfig(LdapConfig):
        kind: Literal["directory2"] = "directory2"
        region: str = "eu"
        \"\"\"Where this second directory runs.\"\"\"


    KIND = ConnectorKind(
        kind="directory2",
        config=DirectoryTwoConfig,
        build=lambda config, dry_run: LdapConnector(config, dry_run=dry_run),
        description="a second directory, from another package",
    )
"""


def test_built_in_kinds() -> None:
    assert {"ldap", "scim", "entra", "github", "gitlab", "plesk", "directadmin"} <= set(
        known_kinds()
    )
    assert isinstance(build_connector(SCIM | {"token": "t"}, dry_run=True), ScimConnector)
    assert isinstance(build_connector(LDAP), LdapConnector)
    with pytest.raises(
        UnknownConnectorKind, match="unknown kind 'svn'; use one of: active_directory, "
    ):
        build_connector({"kind": "svn", "name": "repo"})
    with pytest.raises(UnknownConnectorKind, match="cannot act as the people directory"):
        build_people_directory(SCIM | {"token": "t"})


def test_describe_kinds_lists_every_setting() -> None:
    kinds = {k.kind: k for k in describe_kinds()}
    ldap, scim = kinds["ldap"], kinds["scim"]
    assert ldap.origin == "built-in" and ldap.people_directory and not scim.people_directory
    assert ldap.description and scim.description
    settings = {s.name: s for s in ldap.settings}
    assert "name" not in settings and "kind" not in settings
    password = settings["bind_password"]
    assert (password.type, password.required, password.secret) == ("secret", True, True)
    assert settings["match_attribute"].type == "one of: uid, mail, employeeNumber"
    assert settings["match_attribute"].default == "'employeeNumber'"
    assert settings["ca_file"].type == "path (optional)" and settings["ca_file"].default == "(none)"
    assert settings["start_tls"].default == "false"
    assert all(s.description for k in kinds.values() for s in k.settings), "document every setting"
    scim_settings = {s.name: s for s in scim.settings}
    assert scim_settings["token"].secret and not scim_settings["base_url"].secret
    assert scim_settings["retry_budget_seconds"].type == "number"
    assert scim_settings["on_leave"].type == "one of: disable, delete"


def test_a_kind_from_another_package(plugins: Any) -> None:
    plugins("directory2 = offboarding_extra:KIND", PLUGIN)
    assert "directory2" in known_kinds()
    [described] = [k for k in describe_kinds() if k.kind == "directory2"]
    assert described.origin == (
        "entry point directory2 = offboarding_extra:KIND (offboarding-extra)"
    )
    assert next(s for s in described.settings if s.name == "region").description == (
        "Where this second directory runs."
    )
    connector = build_connector(LDAP | {"kind": "directory2", "name": "second", "region": "us"})
    assert isinstance(connector, LdapConnector) and connector.name == "second"


def test_a_package_may_not_take_over_a_built_in_kind(plugins: Any) -> None:
    plugins("ldap = offboarding_extra:KIND", PLUGIN)
    with pytest.raises(ConnectorPluginError, match="registers kind 'ldap', which built-in"):
        known_kinds()


@pytest.mark.parametrize(
    ("entry", "module", "problem"),
    [
        ("broken = offboarding_extra:KIND", "raise ImportError('no vendor sdk')", "no vendor sdk"),
        ("other = offboarding_extra:KIND", PLUGIN, "whose kind is 'other'"),
        ("thing = offboarding_extra:THING", "THING = 42", "it names 42"),
    ],
)
def test_a_broken_package_is_named(plugins: Any, entry: str, module: str, problem: str) -> None:
    plugins(entry, module)
    with pytest.raises(ConnectorPluginError, match="offboarding-extra") as raised:
        known_kinds()
    assert problem in str(raised.value)


def test_config_errors_name_the_connector_and_field_but_not_the_value() -> None:
    with pytest.raises(ValidationError) as raised:
        build_connector(SCIM | {"base_url": "http://scim.example.test/v2", "token": "hunter2-x"})
    text = str(raised.value)
    assert "connector 'webapp' (kind scim)" in text and "base_url" in text
    assert "hunter2-x" not in text
    with pytest.raises(ValidationError, match="token\n  Field required"):
        build_connector(SCIM)


def test_a_secret_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIM_TOKEN", "from-the-environment")
    from_env = build_connector(SCIM | {"token_env": "SCIM_TOKEN"})
    assert isinstance(from_env, ScimConnector)
    assert from_env.config.token.get_secret_value() == "from-the-environment"
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n")
    from_file = build_connector(SCIM | {"token_file": str(secret)})
    assert isinstance(from_file, ScimConnector)
    assert from_file.config.token.get_secret_value() == "from-a-file"
    older = build_connector(SCIM | {"token": "env:SCIM_TOKEN"})
    assert isinstance(older, ScimConnector)
    assert older.config.token.get_secret_value() == "from-the-environment"
    assert "from-the-environment" not in repr(older.config)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"token_env": "NOT_SET_ANYWHERE"}, "token_env refers to the environment variable "),
        ({"token_file": "/nonexistent/token"}, "token_file names /nonexistent/token, which cannot"),
        ({"token": "x", "token_env": "SCIM_TOKEN"}, "set token or token_env, not both"),
        ({"token": "x", "base_url_env": "SCIM_URL"}, "base_url_env"),  # not a secret setting
    ],
)
def test_secret_sources_that_cannot_work_are_named(
    given: dict[str, str], problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCIM_TOKEN", "t")
    monkeypatch.setenv("SCIM_URL", "https://elsewhere.example.test/v2")
    with pytest.raises(ValidationError) as raised:
        build_connector(SCIM | given)
    assert "connector 'webapp'" in str(raised.value) and problem in str(raised.value)


def test_resolve_sources_only_reads_secret_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA bundle\n")
    config = {"name": "x", "ca_file": str(ca), "bind_password": "p"}
    assert resolve_sources(config, frozenset({"bind_password"})) == config
