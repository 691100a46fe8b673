"""Typed per-connector configuration, where secrets come from, and how a kind plugs in.

Every kind has one pydantic model that subclasses `ConnectorConfig`: its fields are the
settings of a `[[connectors]]` table, documented by their attribute docstrings (which
`describe_kinds()` lists). Unknown settings are refused, and errors name the connector and
the field without echoing values.

A secret field (`SecretStr`) can be given in three ways, so config files never hold one:

- `bind_password_env = "LDAP_BIND_PASSWORD"`: read from that environment variable;
- `bind_password_file = "/run/secrets/ldap"`: read from that file (one trailing newline
  dropped), as container secrets are mounted;
- `bind_password = "env:LDAP_BIND_PASSWORD"`: the older spelling of the first, which works
  for any setting.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator
from pydantic.fields import FieldInfo

from connectors.base import Connector, PeopleDirectory

ENV_PREFIX = "env:"


class ConnectorConfig(BaseModel):
    """The settings every connector has; a kind's model adds its own."""

    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    name: str
    """What the service calls this system: in plans, the policy, the audit."""
    kind: str
    """Which connector implementation (`offboarding connectors` lists them)."""

    @model_validator(mode="before")
    @classmethod
    def _secret_sources(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return resolve_sources(data, secret_fields(cls))
        return data


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(arg) for arg in typing.get_args(annotation))


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(name for name, f in model.model_fields.items() if _is_secret(f.annotation))


def resolve_sources(config: Mapping[str, Any], secrets: frozenset[str]) -> dict[str, Any]:
    """The config with `<secret>_env`, `<secret>_file` and `"env:NAME"` values read.

    `secrets` are the fields that may come from `_env`/`_file`; a field given twice, an
    unset variable or an unreadable file is a ValueError naming the connector.
    """
    resolved = dict(config)
    who = f"connector {config.get('name') or config.get('kind') or '?'!r}"
    for key in list(resolved):
        for suffix, read in (("_env", _from_env), ("_file", _from_file)):
            field_name = key.removesuffix(suffix)
            if not key.endswith(suffix) or field_name not in secrets:
                continue
            if field_name in config:
                raise ValueError(f"{who}: set {field_name} or {key}, not both")
            resolved[field_name] = read(who, key, str(resolved.pop(key)))
    for key, value in resolved.items():
        if isinstance(value, str) and value.startswith(ENV_PREFIX):
            resolved[key] = _from_env(who, key, value.removeprefix(ENV_PREFIX))
    return resolved


def _from_env(who: str, key: str, variable: str) -> str:
    if variable not in os.environ:
        raise ValueError(
            f"{who}: {key} refers to the environment variable {variable}, which is not set"
        )
    return os.environ[variable]


def _from_file(who: str, key: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"{who}: {key} names {path}, which cannot be read: {exc.strerror}"
        ) from exc
    return text.removesuffix("\n")


# -- how a kind plugs in ---------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorKind:
    """One kind of connector, as the registry knows it.

    Built-in kinds live in `connectors/`; other packages register theirs under the entry
    point group `offboarding.connectors`, the entry point's name being the kind:
    `[project.entry-points."offboarding.connectors"] github = "offboarding_github:KIND"`.
    """

    kind: str
    config: type[ConnectorConfig]
    build: Callable[[Any, bool], Connector]  # (validated config, dry_run)
    people: Callable[[Any], PeopleDirectory] | None = None  # when it can be the people directory
    description: str = ""


@dataclass(frozen=True)
class SettingDescription:
    name: str
    type: str  # readable: "string", "one of: disable, delete", "secret", ...
    required: bool
    default: str | None  # as it would be written in config.toml; None when required
    secret: bool  # also settable as <name>_env / <name>_file
    description: str


@dataclass(frozen=True)
class KindDescription:
    kind: str
    description: str
    origin: str  # "built-in" or "entry point <name> (<distribution>)"
    people_directory: bool  # can act as the people directory
    settings: tuple[SettingDescription, ...]


def describe_config(model: type[ConnectorConfig]) -> tuple[SettingDescription, ...]:
    """A kind's settings, in the order its model declares them (`name` and `kind` left out)."""
    return tuple(
        SettingDescription(
            name=name,
            type=type_name(info.annotation),
            required=info.is_required(),
            default=None if info.is_required() else _default_text(info),
            secret=_is_secret(info.annotation),
            description=" ".join((info.description or "").split()),
        )
        for name, info in model.model_fields.items()
        if name not in ("name", "kind")
    )


def _default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} (optional)" if len(args) < len(typing.get_args(annotation)) else inner
    if origin in (list, tuple, frozenset, set):
        return f"list of {type_name(args[0])}" if args else "list"
    names = {str: "string", int: "integer", float: "number", bool: "true/false", Path: "path"}
    if annotation is SecretStr:
        return "secret"
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
