from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from offboarding.wiring.service import settings_as_env
from offboarding.wiring.settings import Settings

CONFIG = """
env = "production"
hris_secret = "a-long-random-hris-secret"
signing_key = "a-long-random-signing-key"
sender = "offboarding@example.nl"

[smtp]
host = "smtp.example.nl"
port = 587
username = "offboarding"
password = "smtp-password"

[people]
connector = "directory"

[[connectors]]
kind = "ldap"
url = "ldaps://ldap.example.nl"
bind_dn = "cn=offboarding,dc=example,dc=nl"
bind_password = "env:TEST_LDAP_PASSWORD"
users_base = "ou=people,dc=example,dc=nl"
groups_base = "ou=groups,dc=example,dc=nl"
managers_group = "cn=managers,ou=groups,dc=example,dc=nl"
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(path))
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))
    return path


@pytest.fixture(autouse=True)
def ldap_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LDAP_PASSWORD", "ldap-password")


def test_the_config_file_is_read_and_the_environment_wins(config_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFBOARDING_PORT", "9090")
    settings = Settings()
    assert settings.port == 9090
    assert settings.smtp is not None and settings.smtp.host == "smtp.example.nl"
    assert settings.connectors[0]["name"] == "directory"  # default name for the directory
    assert settings.connector_config("directory")["kind"] == "ldap"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert "smtp-password" not in repr(settings)
    assert settings.connectors[0]["bind_password"] == "ldap-password"  # from env:NAME
    assert "ldap-password" not in repr(settings) and "ldap-password" not in str(settings)


def test_a_missing_environment_reference_is_named(config_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("TEST_LDAP_PASSWORD")
    with pytest.raises(ValidationError, match="TEST_LDAP_PASSWORD, which is not set"):
        Settings()


def test_production_refuses_default_secrets(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFBOARDING_HOME", str(tmp_path))
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "none.toml"))
    with pytest.raises(ValidationError, match="OFFBOARDING_HRIS_SECRET"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="OFFBOARDING_SIGNING_KEY"):
        Settings(env="production", hris_secret="x" * 20)  # type: ignore[arg-type]
    Settings(env="production", hris_secret="x" * 20, signing_key="y" * 20)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="OFFBOARDING_PERSONIO_WEBHOOK_TOKEN"):
        Settings(
            env="production",
            hris_secret="x" * 20,  # type: ignore[arg-type]
            signing_key="y" * 20,  # type: ignore[arg-type]
            personio_webhook_token="short",  # type: ignore[arg-type]
        )
    Settings(env="development")  # development may use the defaults


def test_bad_values_get_clear_errors(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(tmp_path / "none.toml"))
    with pytest.raises(ValidationError, match="unknown timezone"):
        Settings(timezone="Europe/Nowhere")
    with pytest.raises(ValidationError, match="needs a kind"):
        Settings(connectors=[{"name": "x"}])
    with pytest.raises(ValidationError, match="two connectors are named"):
        Settings(connectors=[{"kind": "ldap"}, {"kind": "ldap"}])


def test_children_get_the_same_settings_from_the_environment(config_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    original = Settings()
    for key, value in settings_as_env(original).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OFFBOARDING_CONFIG", str(config_file.parent / "absent.toml"))
    again = Settings()
    assert again.smtp == original.smtp
    assert again.connectors == original.connectors
    assert again.signing_key.get_secret_value() == original.signing_key.get_secret_value()


def test_a_secret_can_come_from_the_environment_next_to_the_file(config_file, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OFFBOARDING_SMTP__PASSWORD", "from-the-environment")
    settings = Settings()
    assert settings.smtp is not None and settings.smtp.host == "smtp.example.nl"
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "from-the-environment"
