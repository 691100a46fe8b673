"""Settings for a command: every problem at once, named by where the value came from;
the database, named without its password."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from offboarding.wiring.settings import Settings

from offboarding.cli.app import _fail, _first_line, _remember_secrets, _seen

# -- settings: every problem at once, named by where the value came from -------------------


Loc = tuple[int | str, ...]  # where in the settings: ("connectors", 0, "url")
Problem = tuple[Loc, str]
_FILE_LINE = re.compile(r"^\S.*:\d+: ")  # a work instruction file's problem names its line


@dataclass(frozen=True)
class _Sources:
    """Where a setting came from: a command-line option, an OFFBOARDING_* variable or the file."""

    config_file: Path
    options: Mapping[str, object]

    def line(self, problem: Problem) -> str:
        loc, message = problem
        if loc == ("work_instruction",) and _FILE_LINE.match(message):
            return message  # already `FILE:LINE: field: message`, one line per problem
        if loc and loc[0] in self.options:
            return f"option --{str(loc[0]).replace('_', '-')}: {message}"
        variables = {name.upper(): name for name in os.environ}
        for length in range(len(loc), 0, -1):
            variable = "OFFBOARDING_" + "__".join(str(part).upper() for part in loc[:length])
            if variable in variables:
                rest = _field_path(loc) if length < len(loc) else ""
                return f"environment {variables[variable]}: " + _with_path(rest, message)
        return f"{self.config_file.name}: " + _with_path(_field_path(loc), message)


def _field_path(loc: Loc) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _with_path(path: str, message: str) -> str:
    return f"{path}: {message}" if path else message


def _problems(exc: Any, at: Loc = ()) -> list[Problem]:
    """A ValidationError's errors, without pydantic's types, inputs and links."""
    found = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(p for p in error["loc"] if not re.fullmatch(r"[\w-]+\[.*\]", str(p)))
        if error["type"] == "extra_forbidden":
            message = "unknown setting; check its spelling against the README"
        elif error["type"] == "missing":
            message = "missing; this setting is required"
        else:
            message = re.sub(r"^(Value error|Assertion failed), ", "", str(error["msg"]))
        found.append(((*at, *loc), message))
    return found


def _configuration_problems(options: Mapping[str, object]) -> list[str]:
    """Every problem in the settings, not only the first: settings that fail are left out and
    the rest validated again (so checks that need valid values, like production secrets, are
    reported too), and each [[connectors]] table is checked on its own and by its kind."""
    from pydantic import ValidationError
    from pydantic_settings import (
        BaseSettings,
        EnvSettingsSource,
        PydanticBaseSettingsSource,
        SettingsError,
    )

    from offboarding.wiring.settings import Settings, config_file

    class Given(Settings):  # the same rules, on exactly the values given here
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    path = config_file()
    sources = _Sources(path, options)
    try:
        in_file = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        return [f"{path}: not valid TOML: {exc}"]
    except (OSError, UnicodeDecodeError) as exc:
        return [f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}"]
    try:
        in_env = EnvSettingsSource(Settings)()
    except SettingsError as exc:
        name = re.search(r'field "(\w+)"', str(exc))
        return [sources.line(((name.group(1),), "not valid JSON")) if name else str(exc)]
    data = _merged(in_file, in_env, options)
    _remember_secrets(data)
    found: list[Problem] = []
    rest, settings = dict(data), None
    while settings is None:
        try:
            settings = Given(**rest)
        except ValidationError as exc:
            found += _problems(exc)
            failing = {loc[0] for loc, _ in _problems(exc) if loc}
            if not failing & rest.keys():
                break
            rest = {key: value for key, value in rest.items() if key not in failing}
    tables = data.get("connectors")
    each: list[Problem] = []
    for index, table in enumerate(tables if isinstance(tables, list) else []):
        try:
            alone = Given(connectors=[table])
        except ValidationError as exc:
            each += [(("connectors", index, *loc[2:]), m) for loc, m in _problems(exc)]
        else:
            each += _connector_problems(alone.connectors[0], index)
    if each:  # per table, instead of only the first the whole list stops at
        also = {message for _, message in each}
        found = [(at, m) for at, m in found if at[:1] != ("connectors",) or m not in also] + each
    if settings is not None and settings.connectors and not each:
        found += _people_and_mail_problems(settings)
    lines = (line for problem in found for line in sources.line(problem).splitlines())
    return list(dict.fromkeys(lines))


def _merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; tables are merged key by key (as pydantic-settings merges sources)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = _merged(merged[key], value)
            else:
                merged[key] = value
    return merged


def _connector_problems(config: Mapping[str, Any], index: int) -> list[Problem]:
    """What the connector's kind refuses in its settings (its typed config)."""
    from pydantic import ValidationError

    from connectors.registry import build_connector

    try:
        build_connector(config)
    except ValidationError as exc:
        return _problems(exc, ("connectors", index))
    except ValueError as exc:  # an unknown kind, a secret given twice, ...
        return [(("connectors", index, "kind"), str(exc))]
    return []


def _people_and_mail_problems(settings: Settings) -> list[Problem]:
    from connectors.registry import build_people_directory
    from offboarding.wiring.services import build_mailer

    found: list[Problem] = []
    try:
        build_people_directory(settings.connector_config(settings.people.connector))
    except (LookupError, ValueError) as exc:
        found.append((("people", "connector"), str(exc)))
    try:
        build_mailer(settings)
    except ValueError as exc:
        found.append((("smtp",) if settings.smtp else ("sender",), str(exc)))
    return found


def _service_problems(settings: Settings, sources: _Sources) -> list[str]:
    """What the service would refuse when building its connectors, people directory and mail."""
    found = [p for i, c in enumerate(settings.connectors) for p in _connector_problems(c, i)]
    found += [] if found else _people_and_mail_problems(settings)
    return [sources.line(problem) for problem in found]


def _report(problems: Sequence[str]) -> str:
    from offboarding.wiring.settings import config_file

    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    head = f"The configuration has {count} (config file: {config_file().resolve()}):"
    return "\n".join([head, *(f"  {line}" for line in problems)])


def _settings(
    host: str | None = None,
    port: int | None = None,
    prefect_port: int | None = None,
    **overrides: object,
) -> Settings:
    """The settings, or exit 2 listing every problem in them."""
    from offboarding.wiring.settings import Settings

    given = {"host": host, "port": port, "prefect_port": prefect_port, **overrides}
    options = {key: value for key, value in given.items() if value is not None}
    try:
        settings = Settings(**options)  # type: ignore[arg-type]
    except (ValueError, OSError) as exc:  # ValidationError, SettingsError, TOMLDecodeError
        problems = _configuration_problems(options) or [_first_line(exc)]
        _fail(_report(problems), 2)
    _remember_secrets(settings)
    return settings


def _require_connectors(settings: Settings, *, why: str = "") -> None:
    """Exit 2 unless connectors are configured and the service could build them all."""
    from offboarding.wiring.settings import config_file

    if not settings.connectors:
        starter = settings.home / "starter" / "config.toml"  # what `offboarding demo` writes
        _fail(
            "No connectors configured"
            + (f" ({why})" if why else "")
            + f". Add them to {config_file()} (see README), or try `offboarding demo`."
            + (
                f"\nThe demo wrote a configuration to start from: OFFBOARDING_CONFIG={starter}, "
                "with the variables in secrets.env next to it; its systems run only while "
                "the demo runs."
                if starter.exists()
                else ""
            ),
            2,
        )
    problems = _service_problems(settings, _Sources(config_file(), {}))
    if problems:
        _fail(_report(problems), 2)


# -- the database ---------------------------------------------------------------------------


def _database(settings: Settings) -> Engine:
    """The service database, at the newest schema; a SQLite file that does not exist yet
    means this is not the service's data dir (nothing is created there)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from offboarding.wiring.db import create_schema, make_engine

    url = settings.resolved_database_url
    _seen.database_url = url
    try:
        parsed = make_url(url)
    except ArgumentError:
        _fail(
            "database_url is not a database URL (e.g. postgresql://user@host/offboarding); "
            "set it in config.toml or OFFBOARDING_DATABASE_URL",
            2,
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and not Path(parsed.database).exists():
            _fail(
                f"No database at {parsed.database}: nothing has run with the data dir "
                f"{settings.home.resolve()}. Set OFFBOARDING_HOME to the service's data dir "
                "(or database_url to its database), or start it with `offboarding up`."
            )
        engine = make_engine(url)
    else:
        engine = make_engine(url, connect_args={"connect_timeout": 10})
    create_schema(engine)  # an unreachable database is explained by `_explain`
    return engine


def _database_problem(url: str | None, exc: Exception) -> str:
    from sqlalchemy.engine import make_url

    from offboarding.wiring.db import where

    reason = _first_line(getattr(exc, "orig", None) or exc).rsplit(" failed: ", 1)[-1]
    if url is None:
        return f"The database failed: {reason}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"Could not use the SQLite database {parsed.database}: {reason}"
    return (
        f"Could not reach the database at {parsed.host or 'localhost'}:{parsed.port or 5432} "
        f"({where(url)}): {reason}. Check that it is running, and database_url (config.toml "
        "or OFFBOARDING_DATABASE_URL)."
    )


# -- running the service --------------------------------------------------------------------
