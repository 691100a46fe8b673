"""What would happen: `plan` (a dry run) and `connectors` (the kinds installed)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    pass

from offboarding.cli.app import _fail, _redact, _say, app
from offboarding.cli.configuration import _require_connectors, _settings


@app.command("connectors")
def list_connectors() -> None:
    """List the connector kinds that can be configured, with their settings."""
    from connectors.registry import describe_kinds

    try:
        kinds = describe_kinds()
    except ValueError as exc:  # an installed package registers a kind that cannot be used
        _fail(f"{exc}")
    typer.echo(
        'Connector kinds: set kind = "..." in a [[connectors]] table of config.toml. A secret '
        'setting NAME can also be given as NAME_env = "VARIABLE" or NAME_file = "PATH".'
    )
    for kind in kinds:
        roles = kind.origin + ("; can be the people directory" if kind.people_directory else "")
        typer.secho(f"\n{kind.kind}  ({roles})", bold=True)
        if kind.description:
            typer.echo(f"  {kind.description}")
        for setting in kind.settings:
            needed = "required" if setting.required else f"default {setting.default}"
            typer.echo(f"  {setting.name}  ({setting.type}, {needed})")
            if setting.description:
                typer.echo(f"      {setting.description}")


# -- the dry run ----------------------------------------------------------------------------


@app.command()
def plan(
    employee_id: Annotated[str, typer.Argument(help="HR id of the person, e.g. E1042.")],
    urgent: Annotated[bool, typer.Option(help="As for an instant dismissal.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the plan a case for this person would get, changing nothing (a dry run).

    Reads every configured system; creates no case, sends no email, writes nowhere.
    """
    from connectors.base import AccessGrant, Connector, ConnectorError, Leaver
    from connectors.registry import build_connector, build_people_directory
    from offboarding.domain.plan import build_plan

    settings = _settings()
    _require_connectors(settings)
    people = settings.people.connector
    try:
        person = build_people_directory(settings.connector_config(people)).find_person(employee_id)
    except ConnectorError as exc:
        _fail(f"Could not look up {employee_id} in the people directory ({people}): {exc}")
    if person is None:
        _fail(f"No employee {employee_id} in the people directory ({people}).")
    leaver = Leaver(
        employee_id=person.employee_id, email=person.email, display_name=person.display_name
    )
    built: dict[str, Connector] = {}
    read: list[dict[str, Any]] = []
    grants: list[AccessGrant] = []
    for config in settings.connectors:
        name, kind = str(config["name"]), str(config["kind"])
        try:
            built[name] = build_connector(config, dry_run=True)
            found = built[name].inventory(leaver)
        except Exception as exc:  # noqa: BLE001 - reported by name; the others are still read
            reason = str(exc) if isinstance(exc, ConnectorError) else f"{type(exc).__name__}: {exc}"
            read.append({"name": name, "kind": kind, "ok": False, "error": _redact(reason)})
            continue
        grants += found
        read.append({"name": name, "kind": kind, "ok": True, "error": None})
    try:
        dry = build_plan(
            case_id="dry-run",
            leaver=leaver,
            grants=grants,
            policy=settings.policy,
            urgent=urgent,
            capabilities={name: c.capabilities for name, c in built.items()},
        )
    except ConnectorError as exc:  # e.g. the policy asks for an action a connector lacks
        _fail(f"No plan can be made: {exc}")
    rows = dry.rows()
    for entry in read:
        entry["steps"] = sum(1 for row in rows if row.get("connector") == entry["name"])
    failed = [entry["name"] for entry in read if not entry["ok"]]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": True,
                    "leaver": leaver.model_dump(mode="json"),
                    "urgent": urgent,
                    "complete": not failed,
                    "plan_sha256": dry.plan_hash,
                    "connectors": read,
                    "steps": rows,
                },
                indent=2,
                default=str,
            )
        )
    else:
        _print_plan(leaver, urgent, read, rows, dry.plan_hash)
    if failed:
        _fail(
            f"Could not read {', '.join(failed)}: the plan above leaves out what "
            + ("that system grants." if len(failed) == 1 else "those systems grant.")
        )


# Columns shown first when a plan has them; any other column the plan's rows carry follows.
_PLAN_COLUMNS = ("phase", "action", "effect", "kind", "label", "target")
_PLAN_HIDDEN = frozenset({"connector", "key", "name", "parent"})  # heading, ids, short target


def _print_plan(
    leaver: Any, urgent: bool, read: list[dict[str, Any]], rows: list[dict[str, Any]], sha: str
) -> None:
    number = {row.get("key"): str(index) for index, row in enumerate(rows, 1)}
    seen = [key for row in rows for key in row]
    scalar = [
        key
        for key in dict.fromkeys([*_PLAN_COLUMNS, *seen])
        if key not in _PLAN_HIDDEN
        and any(row.get(key) not in (None, "") for row in rows)
        and all(isinstance(row.get(key), str | int | float | bool | None) for row in rows)
    ]
    columns = ["#", *scalar, "with"]
    _say(
        f"Dry run for {leaver.display_name} ({leaver.employee_id}, {leaver.email})"
        + (", urgent" if urgent else "")
        + ": nothing was created, sent or changed."
    )
    for entry in read:
        mine = [row for row in rows if row.get("connector") == entry["name"]]
        title = f"\n{entry['name']} ({entry['kind']})"
        if not entry["ok"]:
            _say(f"{title}: COULD NOT BE READ: {entry['error']}")
            continue
        _say(f"{title}: {entry['steps']} step" + ("" if entry["steps"] == 1 else "s"))
        table = [
            {
                "#": number.get(row.get("key"), ""),
                **{key: "" if row.get(key) is None else str(row.get(key)) for key in scalar},
                "with": f"#{number[row['parent']]}" if row.get("parent") in number else "",
            }
            for row in mine
        ]
        shown = [c for c in columns if c in ("#", *scalar) or any(r[c] for r in table)]
        widths = {c: max([len(c), *(len(r[c]) for r in table)]) for c in shown}
        for line in [dict(zip(shown, shown, strict=True)), *table]:
            _say("  " + "  ".join(line[c].ljust(widths[c]) for c in shown).rstrip())
    _say(
        f"\nplan sha256 {sha} ({len(rows)} steps; a case's stored plan also covers its case "
        "id, so its sha256 differs)"
    )


# -- cases, approvals, retention, audit -----------------------------------------------------
