"""The LDAP connector alone against a real slapd: inventory, revoke and verify the demo leaver.

    .venv/bin/python benchmarks/ldap_connector.py [--rounds 20]

Each round starts a fresh throwaway directory with the demo organisation, so every
round revokes the same access (five groups, the password, sign-in).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from connectors.base import Leaver
from connectors.registry import build_connector
from demo.directory import LocalDirectory
from demo.organisation import seed_demo_org
from offboarding.wiring.logging import configure_logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    timings: dict[str, list[float]] = {
        k: [] for k in ("slapd start", "seed", "inventory", "revoke all", "verify")
    }
    grants_per_round = 0
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            t0 = time.perf_counter()
            directory = LocalDirectory.start(
                Path(tmp) / f"d{n}", admin_password=secrets.token_urlsafe(16)
            )
            t1 = time.perf_counter()
            org = seed_demo_org(directory, password=secrets.token_urlsafe(12))
            t2 = time.perf_counter()
            connector = build_connector(directory.connector_config())
            leaver = Leaver(
                employee_id=org.leaver_id, email=org.leaver_email, display_name=org.leaver_name
            )
            grants = connector.inventory(leaver)
            t3 = time.perf_counter()
            for grant in grants:
                connector.revoke(grant)
            t4 = time.perf_counter()
            verification = connector.verify(leaver)
            t5 = time.perf_counter()
            directory.stop()
            if not verification.clean:
                raise SystemExit(f"round {n}: verification not clean: {verification}")
            grants_per_round = len(grants)
            for key, value in zip(
                timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
            ):
                timings[key].append(value * 1000)
    print(f"{args.rounds} rounds; demo leaver with {grants_per_round} grants; milliseconds:")
    for key, values in timings.items():
        print(
            f"  {key:<12} median {statistics.median(values):7.1f}  "
            f"min {min(values):7.1f}  max {max(values):7.1f}"
        )


if __name__ == "__main__":
    main()
