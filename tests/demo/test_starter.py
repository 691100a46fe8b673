"""The configuration the demo writes to start from: `offboarding check` passes with it, and
no secret is in config.toml."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from demo.apex import NAME
from demo.run import start_systems
from demo.starter import StarterConnector, write_starter
from offboarding.wiring.settings import Settings

CLI = [sys.executable, "-m", "offboarding.cli"]


@pytest.fixture(autouse=True)
def no_outer_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFBOARDING_CONFIG", os.devnull)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            (values[name],) = shlex.split(value)
    return values


def test_the_starter_checks_out_against_the_demo_systems_in_production(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    with contextlib.ExitStack() as stack:
        systems = start_systems(stack, home)
        starter = write_starter(
            home / "starter", settings=Settings(home=home), connectors=systems.connectors
        )
        text = starter.config.read_text()
        config = tomllib.loads(text)
        secrets = read_env_file(starter.secrets)
        outer = {k: v for k, v in os.environ.items() if not k.startswith("OFFBOARDING_")}
        checked = subprocess.run(
            [*CLI, "check"],
            cwd=tmp_path,
            env={
                **outer,
                **secrets,
                "OFFBOARDING_CONFIG": str(starter.config),
                "OFFBOARDING_HOME": str(tmp_path / "installation"),
                "OFFBOARDING_ENV": "production",  # refuses default secrets: these are fresh
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        unknown_assignee = subprocess.run(
            [*CLI, "check"],
            cwd=tmp_path,
            env={
                **outer,
                **secrets,
                "OFFBOARDING_CONFIG": str(starter.config),
                "OFFBOARDING_HOME": str(tmp_path / "installation"),
                "OFFBOARDING_POLICY__MANUAL_ASSIGNEE": "E9999",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert unknown_assignee.returncode == 1, unknown_assignee.stdout + unknown_assignee.stderr
    assert (
        "config.toml: policy: E9999 (manual_assignee) is not in the people directory"
        in unknown_assignee.stdout
    )
    assert starter.config == (home / "starter" / "config.toml").resolve()
    assert stat.S_IMODE(starter.secrets.stat().st_mode) == 0o600
    assert set(secrets) == {
        "OFFBOARDING_HRIS_SECRET",
        "OFFBOARDING_SIGNING_KEY",
        "DIRECTORY_BIND_PASSWORD",
        "APEX_SCIM_TOKEN",
        "ENTRA_SECRET",
        "GITHUB_TOKEN",
        "PLESK_KEY",
        "DA_LOGIN_KEY",
    }
    assert not [name for name, value in secrets.items() if value in text]
    kinds = [(c["name"], c["kind"]) for c in config["connectors"]]
    assert kinds == [
        ("directory", "ldap"),
        ("Microsoft Entra ID (sandbox)", "entra"),
        ("GitHub (sandbox)", "github"),
        ("Webhosting (Plesk sandbox)", "plesk"),
        ("Webhosting (DirectAdmin sandbox)", "directadmin"),
        (NAME, "scim"),
    ]
    assert config["people"] == {"connector": "directory"}
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "directory (ldap): ok" in checked.stdout
    for name, kind in kinds:  # every system, sandboxes included, answers the starter's config
        assert f"{name} ({kind}): ok" in checked.stdout, checked.stdout
    assert "managers who can approve: 4" in checked.stdout
    assert not [name for name, value in secrets.items() if value in checked.stdout]


def test_a_secret_with_no_variable_to_go_to_is_refused_and_nothing_written(
    tmp_path: Path,
) -> None:
    leaky = StarterConnector(
        {"name": "crm", "kind": "scim", "base_url": "https://crm.example.nl/scim/v2", "token": "x"},
        secrets={},
    )
    with pytest.raises(ValueError, match="token is a secret setting"):
        write_starter(tmp_path / "starter", settings=Settings(home=tmp_path), connectors=[leaky])
    assert not (tmp_path / "starter").exists()
