"""A configuration to start from: `config.toml` and `secrets.env`, written by the demo.

They go into `<demo data dir>/starter/`, not into the demo data dir itself: a `config.toml`
there would be read by every command run with OFFBOARDING_HOME set to the demo's data dir
(the demo prints one), and its "env:" references would stop those commands unless the
secrets were loaded. The demo never reads them; it starts fresh each time.

config.toml describes the demo's systems as the demo ran them, with comments on what to
change for real ones. No secret is in it: connector secrets are "env:NAME" references and
the service's own secrets are OFFBOARDING_* variables. Their values are in secrets.env
(mode 0600), in a form shells (`set -a; . secrets.env; set +a`), systemd's
EnvironmentFile= and docker's --env-file all read.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.registry import secret_settings
from offboarding.wiring.settings import Settings

_COMMENT_COLUMN = 36
# What a reader needs to know about a connector setting, by key.
_NOTES = {
    "name": "shown as the system in plans, approval pages and emails",
    "url": "your directory: ldaps://... (or ldap://... with start_tls = true)",
    "bind_dn": "the demo binds as admin: use a service account (see README)",
    "managers_group": 'who may approve (and/or managers = ["E0007"])',
    "lockout_policy_dn": "a ppolicy with pwdLockout: TRUE makes the lock stick",
    "base_url": "the app's SCIM root: https:// (http:// only on 127.0.0.1)",
}


@dataclass(frozen=True)
class StarterConnector:
    """One connector as the demo configured it, and where each of its secrets goes."""

    config: Mapping[str, Any]
    secrets: Mapping[str, str]  # config key -> the environment variable holding its value


@dataclass(frozen=True)
class Starter:
    config: Path
    secrets: Path


def write_starter(
    folder: Path, *, settings: Settings, connectors: Sequence[StarterConnector]
) -> Starter:
    """Write `folder/config.toml` and `folder/secrets.env` (mode 0600) and return their paths.

    Refuses (ValueError, nothing written) a connector value that looks secret but has no
    environment variable to go to: a secret never lands in config.toml.
    """
    folder = folder.resolve()
    values = {
        "OFFBOARDING_HRIS_SECRET": secrets.token_urlsafe(32),
        "OFFBOARDING_SIGNING_KEY": secrets.token_urlsafe(32),
    }
    blocks = []
    for connector in connectors:
        blocks.append(_connector_toml(connector))
        for key, variable in connector.secrets.items():
            values[variable] = str(connector.config[key])
    starter = Starter(config=folder / "config.toml", secrets=folder / "secrets.env")
    folder.mkdir(parents=True, exist_ok=True)
    starter.config.write_text(_header(starter) + _service_toml(settings) + "".join(blocks))
    _write_private(starter.secrets, _secrets_env(values, connectors))
    return starter


def _header(starter: Starter) -> str:
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""\
# A configuration to start from, written by `offboarding demo` ({written}).
# It describes the demo's systems as the demo ran them: the directory (slapd) and the
# information system (a SCIM app standing in for an Oracle APEX or Laravel application).
# Those run only while the demo runs, on ports that change at every start.
#
# No secret is in this file: "env:NAME" reads a value from the environment variable NAME,
# and the service's own secrets are OFFBOARDING_* variables. The values are in
#   {starter.secrets}   (mode 0600; never commit it)
#
# Try it against the running demo, from another terminal:
#   set -a; . {shlex.quote(str(starter.secrets))}; set +a
#   OFFBOARDING_CONFIG={shlex.quote(str(starter.config))} offboarding check
# For your own systems: copy this file to $OFFBOARDING_HOME/config.toml (default
# .offboarding/config.toml), point the connectors at your systems, put your own secrets in
# the environment, then run `offboarding check` and `offboarding up`. See the README.

"""


def _service_toml(settings: Settings) -> str:
    lines = [
        _commented('# env = "production"', "refuses default or short secrets"),
        _commented(
            '# public_url = "https://offboarding.example.nl"', "base of the links in emails"
        ),
        _commented(
            f"timezone = {_toml(settings.timezone)}",
            "a future last working day runs at its end_of_day here",
        ),
        f"end_of_day = {_toml(settings.end_of_day)}",
        _commented(
            f"default_language = {_toml(settings.default_language)}",
            "per recipient: the directory's preferredLanguage",
        ),
        f"sender = {_toml(settings.sender)}",
        f"approval_ttl_hours = {_toml(settings.approval_ttl_hours)}",
        _commented(f"retention_days = {_toml(settings.retention_days)}", "then personal data goes"),
        _commented(
            '# database_url = "postgresql://offboarding@db.example.nl/offboarding"',
            "default: SQLite in the data dir",
        ),
        "",
        _commented("# [smtp]", "without it, mail goes to the outbox (as in the demo)"),
        '# host = "smtp.example.nl"',
        "# port = 587",
        _commented('# username = "offboarding"', "password: OFFBOARDING_SMTP__PASSWORD"),
        "",
        "[people]",
        _commented(
            f"connector = {_toml(settings.people.connector)}",
            "who is who: employees, requesters, managers",
        ),
    ]
    return "\n".join(lines) + "\n"


def _connector_toml(connector: StarterConnector) -> str:
    lines = ["", "[[connectors]]"]
    for key, value in connector.config.items():
        if value is None:
            continue
        if key in connector.secrets:
            variable = connector.secrets[key]
            lines.append(_commented(f"{key} = {_toml(f'env:{variable}')}", "see secrets.env"))
        elif key in secret_settings(connector.config.get("kind")) and value:
            raise ValueError(
                f"connector {connector.config.get('name')!r}: {key} is a secret setting but has no "
                "environment variable to go to; name one in its `secrets`"
            )
        else:
            lines.append(_commented(f"{key} = {_toml(value)}", _NOTES.get(key, "")))
    return "\n".join(lines) + "\n"


def _secrets_env(values: Mapping[str, str], connectors: Sequence[StarterConnector]) -> str:
    used_by = {
        "OFFBOARDING_HRIS_SECRET": "HR signs its events with it (fresh; the demo has its own)",
        "OFFBOARDING_SIGNING_KEY": "signs approval links and decisions (fresh, random)",
    }
    for connector in connectors:
        for key, variable in connector.secrets.items():
            used_by[variable] = f"connector {connector.config.get('name')!r}: {key}"
    lines = [
        "# The secrets config.toml next to this file refers to, written by `offboarding demo`.",
        "# Keep this file private and out of version control. Load it into a shell with",
        "#   set -a; . ./secrets.env; set +a",
        "# or give it to systemd (EnvironmentFile=) or docker (--env-file).",
    ]
    for variable, value in values.items():
        lines.append(f"# {used_by[variable]}")
        lines.append(f"{variable}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def _commented(line: str, note: str) -> str:
    if not note:
        return line
    return f"{line:<{_COMMENT_COLUMN - 1}} # {note}"


def _toml(value: Any) -> str:
    """A TOML value for the simple values a connector config holds."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):  # an inline table; keys quoted (employee ids, logins)
        return "{ " + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")
