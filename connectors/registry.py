"""Pick a connector implementation by the `kind` in its config."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from connectors.base import Connector, PeopleDirectory

# kind -> factory(config mapping, dry_run) -> connector. Modules register on import below.
ConnectorFactory = Callable[[Mapping[str, Any], bool], Connector]
PeopleFactory = Callable[[Mapping[str, Any]], PeopleDirectory]


class UnknownConnectorKind(ValueError):
    pass


def _factories() -> dict[str, ConnectorFactory]:
    from connectors import ldap, scim

    return {"ldap": ldap.from_config, "scim": scim.from_config}


def _people_factories() -> dict[str, PeopleFactory]:
    from connectors import ldap

    return {"ldap": ldap.people_from_config}


def known_kinds() -> list[str]:
    return sorted(_factories())


def build_connector(config: Mapping[str, Any], *, dry_run: bool = False) -> Connector:
    """Build the connector a config describes; the config must name its `kind`."""
    kind = config.get("kind")
    factories = _factories()
    if kind not in factories:
        raise UnknownConnectorKind(
            f"connector {config.get('name', '?')!r}: unknown kind {kind!r}; "
            f"use one of: {', '.join(sorted(factories))}"
        )
    return factories[kind](config, dry_run)


def build_people_directory(config: Mapping[str, Any]) -> PeopleDirectory:
    """Build the people directory from a connector config of a kind that can act as one."""
    kind = config.get("kind")
    factories = _people_factories()
    if kind not in factories:
        raise UnknownConnectorKind(
            f"connector {config.get('name', '?')!r} of kind {kind!r} cannot act as the "
            f"people directory; use one of: {', '.join(sorted(factories))}"
        )
    return factories[kind](config)
