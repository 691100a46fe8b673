"""The Active Directory connector against a real Samba DC: a leaver in 50 groups.

    .venv/bin/python benchmarks/ad_connector.py [--rounds 3]

Provisions a throwaway DC once (demo/samba_ad.py), then per round: a fresh copy of the DC
with the demo leaver put into 46 more groups (50 direct groups; plus the demo's 3 nested
ones), then times `inventory`, and revoke of every plan step one at a time (as the flow
does, each on its own LDAPS connection) followed by `verify`. Prints medians.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import ldap3

from connectors.active_directory import from_config
from connectors.base import Leaver, OutcomeStatus
from connectors.testing import in_plan_order, sent
from demo.samba_ad import STAFF_OU, SambaDC, add_group, provision, samba_missing, seed_demo
from offboarding.wiring.logging import configure_logging

ADMIN_PASSWORD = "Benchmark-Admin-1!"
LEAVER = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")


def golden(home: Path) -> Path:
    provisioned = provision(home / "provisioned", admin_password=ADMIN_PASSWORD)
    dc = SambaDC.start(provisioned, home / "golden", admin_password=ADMIN_PASSWORD)
    try:
        seed_demo(dc, password="Welkom-2024!x")
        conn = dc.admin_connection()
        leaver = f"CN=Jan de Vries,{STAFF_OU}"
        for n in range(46):  # the demo leaver is in 4 direct groups already
            add_group(conn, f"project-{n:02}", [leaver])
        conn.unbind()
    finally:
        dc.stop()
    return home / "golden"


def one_round(source: Path, workdir: Path) -> tuple[float, float, float, int]:
    dc = SambaDC.start(source, workdir, admin_password=ADMIN_PASSWORD)
    try:
        connector = from_config(dc.connector_config(), dry_run=False)
        started = time.perf_counter()
        grants = connector.inventory(LEAVER)
        inventory = time.perf_counter() - started
        steps = in_plan_order(sent(connector, grants))
        started = time.perf_counter()
        for grant in steps:
            assert connector.revoke(grant).status is OutcomeStatus.REVOKED
        revoke = time.perf_counter() - started
        started = time.perf_counter()
        verification = connector.verify(LEAVER)
        verify = time.perf_counter() - started
        assert verification.clean, verification
        return inventory, revoke, verify, len(steps)
    finally:
        dc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    missing = samba_missing()
    if missing:
        raise SystemExit(missing)
    configure_logging(level=logging.WARNING)
    logging.getLogger(ldap3.__name__).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ad-benchmark-") as home:
        started = time.perf_counter()
        source = golden(Path(home))
        print(f"provision + seed (once): {time.perf_counter() - started:.1f} s")
        rounds = [one_round(source, Path(home) / f"round{n}") for n in range(args.rounds)]
    inventory, revoke, verify, steps = (list(column) for column in zip(*rounds, strict=True))
    print(f"leaver in 50 direct groups (+3 nested, + primary group); {steps[0]} plan steps sent")
    print(f"inventory:        median {statistics.median(inventory) * 1000:7.0f} ms")
    print(f"revoke (all):     median {statistics.median(revoke) * 1000:7.0f} ms")
    print(f"verify:           median {statistics.median(verify) * 1000:7.0f} ms")
    total = [r + v for r, v in zip(revoke, verify, strict=True)]
    print(f"revoke + verify:  median {statistics.median(total) * 1000:7.0f} ms "
          f"over {args.rounds} rounds")  # fmt: skip


if __name__ == "__main__":
    main()
