"""Pick a connector implementation by the `kind` in its config.

The built-in kinds (`ldap`, `scim`) plus every kind another installed package registers
under the entry point group `offboarding.connectors` (see `connectors.config.ConnectorKind`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from connectors.base import Connector, PeopleDirectory
from connectors.config import (
    ConnectorConfig,
    ConnectorKind,
    KindDescription,
    describe_config,
    secret_fields,
)

ENTRY_POINT_GROUP = "offboarding.connectors"
BUILT_IN = "built-in"


class UnknownConnectorKind(ValueError):
    pass


class ConnectorPluginError(ValueError):
    """An installed package registers a connector kind that cannot be used."""


def _built_in() -> list[ConnectorKind]:
    from connectors import active_directory, directadmin, entra, github, gitlab, ldap, plesk, scim

    return [
        ldap.KIND,
        active_directory.KIND,
        scim.KIND,
        entra.KIND,
        github.KIND,
        gitlab.KIND,
        plesk.KIND,
        directadmin.KIND,
    ]


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist.name if entry.dist is not None else "unknown distribution"
    return f"entry point {entry.name} = {entry.value} ({dist})"


@cache
def _kinds() -> dict[str, tuple[ConnectorKind, str]]:
    kinds = {kind.kind: (kind, BUILT_IN) for kind in _built_in()}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        origin = _origin(entry)
        if entry.name in kinds:
            raise ConnectorPluginError(
                f"{origin} registers kind {entry.name!r}, which {kinds[entry.name][1]} already "
                "provides; uninstall one of them or rename the entry point"
            )
        try:
            loaded = entry.load()
        except Exception as exc:
            raise ConnectorPluginError(
                f"{origin} could not be loaded: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(loaded, ConnectorKind) or loaded.kind != entry.name:
            raise ConnectorPluginError(
                f"{origin} must name a connectors.config.ConnectorKind whose kind is "
                f"{entry.name!r}; it names {loaded!r}"
            )
        kinds[entry.name] = (loaded, origin)
    return kinds


def reload_kinds() -> None:
    """Forget the kinds found so far (after installing a package, and in tests)."""
    _kinds.cache_clear()


def known_kinds() -> list[str]:
    return sorted(_kinds())


def connector_kind(kind: object, name: object = "?") -> ConnectorKind:
    kinds = _kinds()
    if not isinstance(kind, str) or kind not in kinds:
        raise UnknownConnectorKind(
            f"connector {name!r}: unknown kind {kind!r}; use one of: {', '.join(sorted(kinds))}"
        )
    return kinds[kind][0]


def secret_settings(kind: object) -> frozenset[str]:
    """The secret settings of a kind (each also settable as `<name>_env` / `<name>_file`)."""
    try:
        return secret_fields(connector_kind(kind).config)
    except UnknownConnectorKind:
        return frozenset()


def load_config(config: Mapping[str, Any]) -> ConnectorConfig:
    """The typed config of a `[[connectors]]` table; errors name the connector and field."""
    spec = connector_kind(config.get("kind"), config.get("name", "?"))
    try:
        return spec.config.model_validate(dict(config))
    except ValidationError as exc:
        title = f"connector {config.get('name', spec.kind)!r} (kind {spec.kind})"
        try:
            named = ValidationError.from_exception_data(
                title, [_line(error) for error in exc.errors()], hide_input=True
            )
        except (KeyError, TypeError):  # an error type pydantic cannot rebuild: keep it as is
            raise exc from None
        raise named from None


def _line(error: Any) -> Any:
    line = {"type": error["type"], "loc": error["loc"], "input": error.get("input")}
    if "ctx" in error:
        line["ctx"] = error["ctx"]
    return line


def build_connector(config: Mapping[str, Any], *, dry_run: bool = False) -> Connector:
    """Build the connector a config describes; the config must name its `kind`."""
    spec = connector_kind(config.get("kind"), config.get("name", "?"))
    return spec.build(load_config(config), dry_run)


def build_people_directory(config: Mapping[str, Any]) -> PeopleDirectory:
    """Build the people directory from a connector config of a kind that can act as one."""
    spec = connector_kind(config.get("kind"), config.get("name", "?"))
    if spec.people is None:
        able = sorted(k for k, (s, _) in _kinds().items() if s.people is not None)
        raise UnknownConnectorKind(
            f"connector {config.get('name', '?')!r} of kind {spec.kind!r} cannot act as the "
            f"people directory; use one of: {', '.join(able)}"
        )
    return spec.people(load_config(config))


def describe_kinds() -> list[KindDescription]:
    """Every kind that can be configured, with its settings, for `offboarding connectors`."""
    return [
        KindDescription(
            kind=name,
            description=spec.description,
            origin=origin,
            people_directory=spec.people is not None,
            settings=describe_config(spec.config),
        )
        for name, (spec, origin) in sorted(_kinds().items())
    ]
