"""`offboarding reconcile`: accounts in the connected systems whose owner HR marks as gone.

Every leaver the service knows has left (a completed or needs-attention case whose data
retention has not erased) is inventoried again in every configured system, read only
(connectors built with `dry_run=True`). What a plan would take away is printed: it
should not be there. Exit 1 when anything is found or a system cannot be read.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from offboarding.cli.app import _fail, _redact, _say, app
from offboarding.cli.configuration import _database, _require_connectors, _settings


def _where(config: dict[str, Any]) -> str:
    """The host a connector talks to, as configured (never a password)."""
    for key in ("url", "base_url", "host", "api_url", "endpoint"):
        value = config.get(key)
        if isinstance(value, str) and value and not value.startswith("env:"):
            return value
    return str(config.get("kind", "?"))


@app.command()
def reconcile(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List access still active for people HR marks as gone (orphaned accounts).

    Reads every configured system for every leaver with a completed or needs-attention
    case; changes nothing. Exits 1 when anything is found or a system cannot be read.
    """
    from connectors.base import Connector, Leaver
    from connectors.registry import build_connector
    from offboarding.domain.cases import leaver_of
    from offboarding.domain.retention import ERASED
    from offboarding.domain.watch import known_leavers, reinventory

    settings = _settings()
    _require_connectors(settings)
    engine = _database(settings)
    leavers = known_leavers(engine, erased_marker=ERASED)
    built: dict[str, Connector] = {}
    where: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for config in settings.connectors:
        name = str(config["name"])
        where[name] = _where(config)
        try:
            built[name] = build_connector(config, dry_run=True)
        except Exception as exc:  # noqa: BLE001 - named below; the others are still read
            unreadable[name] = f"{type(exc).__name__}: {exc}"
    found: list[dict[str, str]] = []
    for case in leavers:
        leaver: Leaver = leaver_of(case)
        findings = reinventory(built, leaver, settings.policy)
        for name, error in findings.failures.items():
            unreadable.setdefault(name, error)
        found += [
            {
                "employee_id": case.employee_id,
                "display_name": case.display_name,
                "case_id": case.id,
                "case_status": case.status.value,
                "system": grant.connector,
                "kind": grant.kind,
                "key": grant.key,
                "target": grant.target,
                "label": grant.label.text,
            }
            for grant in findings.found
        ]
    if as_json:
        typer.echo(
            _redact(
                json.dumps(
                    {
                        "leavers_checked": len(leavers),
                        "systems": sorted(where),
                        "found": found,
                        "unreadable": [
                            {"system": name, "where": where[name], "error": error}
                            for name, error in sorted(unreadable.items())
                        ],
                    },
                    indent=2,
                )
            )
        )
    else:
        _print(found, len(leavers), sorted(where))
    problems = [
        f"{name} ({where[name]}) could not be read: {error}"
        for name, error in sorted(unreadable.items())
    ]
    if problems:
        _fail("\n".join(problems) + "\n(`offboarding check` tests every connector.)")
    if found:
        raise typer.Exit(1)


def _print(found: list[dict[str, str]], leavers: int, systems: list[str]) -> None:
    _say(
        f"{leavers} leaver(s) checked in {len(systems)} system(s) ({', '.join(systems)}): "
        + (f"{len(found)} access(es) still active." if found else "nothing still active.")
    )
    person = None
    for row in found:
        if row["employee_id"] != person:
            person = row["employee_id"]
            _say(
                f"\n{row['display_name']} ({person}), case {row['case_id']} ({row['case_status']})"
            )
        _say(f"  {row['system']}  {row['kind']}  {row['key']}  {row['target']}")
