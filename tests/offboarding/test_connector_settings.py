"""How `[[connectors]]` tables are read: names, secrets from the environment or a file, and
the policy's disable-or-delete choice handed to the connector it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.base import DELETE, DISABLE
from connectors.registry import build_connector
from connectors.scim import ACCOUNT, ScimConnector
from offboarding.wiring.settings import Settings

LDAP: dict[str, Any] = {
    "kind": "ldap",
    "url": "ldap://127.0.0.1:1",
    "bind_dn": "cn=offboarding,dc=example,dc=test",
    "users_base": "ou=people,dc=example,dc=test",
    "groups_base": "ou=groups,dc=example,dc=test",
}
SCIM: dict[str, Any] = {
    "kind": "scim",
    "name": "webapp",
    "base_url": "https://scim.example.test/v2",
    "token": "t",
}


@pytest.fixture(autouse=True)
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))


def test_secrets_from_a_named_variable_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LDAP_BIND_PASSWORD", "from-the-environment")
    secret = tmp_path / "scim-token"
    secret.write_text("from-a-file\n")
    settings = Settings(
        connectors=[
            {**LDAP, "bind_password_env": "LDAP_BIND_PASSWORD"},
            {**{k: v for k, v in SCIM.items() if k != "token"}, "token_file": str(secret)},
        ]
    )
    directory, webapp = settings.connectors
    assert directory["bind_password"] == "from-the-environment"
    assert "bind_password_env" not in directory
    assert webapp["token"] == "from-a-file" and "token_file" not in webapp
    assert "from-the-environment" not in repr(settings) and "from-a-file" not in repr(settings)


def test_a_missing_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(ValidationError, match="'directory': bind_password_env refers to the"):
        Settings(connectors=[{**LDAP, "bind_password_env": "NOT_SET_HERE"}])


def test_the_policy_choice_reaches_the_connector() -> None:
    settings = Settings(
        connectors=[{**LDAP, "bind_password": "p"}, {**SCIM, "on_leave": "deactivate"}],
        policy={"on_leave": {"webapp": "delete"}},  # type: ignore[arg-type]
    )
    webapp = build_connector(settings.connector_config("webapp"))
    assert isinstance(webapp, ScimConnector) and webapp.deletes
    capability = webapp.capabilities.of(ACCOUNT)
    assert capability is not None and capability.default_action == DELETE
    assert "on_leave" not in settings.connector_config("directory")  # not named: its default
    fallback = Settings(connectors=[{**SCIM, "on_leave": "delete"}])  # the connector's own key
    assert (
        build_connector(fallback.connector_config("webapp"))
        .capabilities.of(  # type: ignore[union-attr]
            ACCOUNT
        )
        .default_action
        == DELETE
    )
    assert build_connector(SCIM).capabilities.of(ACCOUNT).default_action == DISABLE  # type: ignore[union-attr]


def test_a_policy_for_an_unknown_connector_is_refused() -> None:
    with pytest.raises(ValidationError, match="names connector 'mail', which is not configured"):
        Settings(connectors=[SCIM], policy={"on_leave": {"mail": "delete"}})  # type: ignore[arg-type]


def test_deleting_directory_accounts_is_refused_naming_what_to_do() -> None:
    settings = Settings(
        connectors=[{**LDAP, "bind_password": "p"}],
        policy={"on_leave": {"directory": "delete"}},  # type: ignore[arg-type]
    )
    with pytest.raises(ValidationError) as raised:
        build_connector(settings.connector_config("directory"))
    text = str(raised.value)
    assert "connector 'directory' (kind ldap)" in text and "on_leave" in text
    assert '[policy.on_leave] directory = "disable"' in text
