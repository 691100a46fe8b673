"""The Entra connector against the Graph sandbox: revoke and verify a leaver in 50 groups.

    .venv/bin/python benchmarks/entra_connector.py [--rounds 3]

Scenarios: no added latency; 100 ms added to every request (sandbox side); and a 429
burst (the first request, then 10 `$batch` items answered 429 with Retry-After: 1). Each
is run one grant at a time (`revoke` per plan step, as the flow does) and in bulk
(`revoke_many`, `$batch`). Printed: seconds, HTTP requests the sandbox received (a
`$batch` counts once), and requests sent before a Retry-After deadline the sandbox gave
(must be 0).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from connectors.base import Leaver, OutcomeStatus
from connectors.entra import EntraConnector, from_config
from connectors.testing import in_plan_order, sent
from demo.graph_sandbox import GraphTenant
from demo.graph_sandbox_serve import ALL_PERMISSIONS, SandboxTransport, asgi_app, seed_demo_tenant
from offboarding.wiring.logging import configure_logging

SECRET = "benchmark-secret"
APP = "benchmark-app"


def setup(latency: float) -> tuple[GraphTenant, EntraConnector, Leaver]:
    tenant = GraphTenant()
    tenant.register_app(APP, ALL_PERMISSIONS, secret=SECRET)
    seed = seed_demo_tenant(tenant)
    for n in range(50 - 6):  # the demo leaver is in 6 groups already
        tenant.data.add_group(f"project-{n:02}", [seed.leaver_id])
    transport = SandboxTransport(asgi_app(tenant, [latency]))
    config = {
        "tenant_id": "sandbox",
        "client_id": APP,
        "client_secret": SECRET,
        "retry_budget_seconds": 30,
    }
    connector = from_config(config, False, transport=transport)
    leaver = Leaver(employee_id="E1042", email=seed.leaver_upn, display_name="Jan de Vries")
    return tenant, connector, leaver


def run(latency: float, burst: bool, bulk: bool) -> tuple[float, int, int]:
    tenant, connector, leaver = setup(latency)
    grants = connector.inventory(leaver)
    before = len(tenant.requests)
    if burst:
        tenant.throttle_next(1)
        tenant.throttle_batch_items(1, 10)
    started = time.perf_counter()
    if bulk:
        outcomes = connector.revoke_many(grants)
    else:
        outcomes = [connector.revoke(g) for g in in_plan_order(sent(connector, grants))]
    verification = connector.verify(leaver)
    elapsed = time.perf_counter() - started
    assert all(o.status is OutcomeStatus.REVOKED for o in outcomes), outcomes
    assert verification.clean, verification
    http = [r for r in tenant.requests[before:] if not r.in_batch]
    return elapsed, len(http), tenant.early_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    print(f"{'scenario':<28}{'mode':<10}{'median s':>10}{'requests':>10}{'early':>7}")
    for name, latency, burst in (
        ("no added latency", 0.0, False),
        ("100 ms per request", 0.1, False),
        ("429 burst (Retry-After 1)", 0.0, True),
    ):
        for bulk in (False, True):
            results = [run(latency, burst, bulk) for _ in range(args.rounds)]
            median = statistics.median(r[0] for r in results)
            requests = results[-1][1]
            early = max(r[2] for r in results)
            mode = "$batch" if bulk else "per step"
            print(f"{name:<28}{mode:<10}{median:>10.3f}{requests:>10}{early:>7}")


if __name__ == "__main__":
    main()
