"""The GitHub connector against the GitHub sandbox: revoke and verify a leaver who is a
member in 5 teams, a direct collaborator on 30 repositories and has 2 SSO-authorised
credentials, with latency injected on every request; then the same with a 429 burst.

    .venv/bin/python benchmarks/github_connector.py [--latency 0.1] [--burst 3]

The sandbox runs in process (no socket); the latency is awaited by the sandbox per request.
"Early requests" counts requests the sandbox received before a Retry-After deadline it had
given: it must be 0.
"""

from __future__ import annotations

import argparse
import logging
import time

from connectors.base import Leaver, OutcomeStatus
from connectors.github import from_config
from demo.github_sandbox import GitHubSandbox
from demo.github_sandbox_api import GitHubOrg
from offboarding.wiring.logging import configure_logging

TOKEN = "github_pat_benchmark"
LEAVER = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")
LOGIN = "jdevries-acme"


def seeded(repos: int, teams: int) -> GitHubOrg:
    org = GitHubOrg()
    org.add_member(org.owner, "admin")
    org.add_member(LOGIN)
    org.add_member("colleague")
    for n in range(teams):
        org.add_team(f"team-{n:02d}", LOGIN, "colleague")
    org.add_team("other", "colleague")
    for n in range(repos):
        org.add_collaborator(f"repo-{n:02d}", LOGIN, "write")
        org.add_collaborator(f"repo-{n:02d}", "colleague", "read")
    org.authorize_credential(LOGIN, "personal access token")
    org.authorize_credential(LOGIN, "SSH key")
    return org


def run(latency: float, burst: int, retry_after: float) -> tuple[float, int, int, int, bool]:
    """(seconds, requests, grants, early requests, verification clean)."""
    sandbox = GitHubSandbox(org=seeded(30, 5), tokens={TOKEN: True}, latency=latency)
    config = {
        "name": "github",
        "base_url": "http://127.0.0.1:9",
        "organization": sandbox.org.login,
        "token": TOKEN,
        "logins": {LEAVER.employee_id: LOGIN},
        "saml_sso": True,
        "retry_budget_seconds": 30,
    }
    connector = from_config(config, False, transport=sandbox.transport())
    started = time.perf_counter()
    grants = connector.inventory(LEAVER)
    if burst:
        sandbox.throttle(429, retry_after=retry_after, times=burst)
    for grant in grants:  # the plan sends each grant on its own; cascades are a plan matter
        outcome = connector.revoke(grant)
        assert outcome.status in (OutcomeStatus.REVOKED, OutcomeStatus.ALREADY_DONE), outcome
    clean = connector.verify(LEAVER).clean
    elapsed = time.perf_counter() - started
    return elapsed, len(sandbox.seen), len(grants), sandbox.early_requests, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--burst", type=int, default=3)
    parser.add_argument("--retry-after", type=float, default=1)
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    print(f"leaver in 30 repositories and 5 teams; {args.latency * 1000:.0f} ms per request")
    for label, burst in (("no throttling", 0), (f"429 burst x{args.burst}", args.burst)):
        seconds, requests, grants, early, clean = run(args.latency, burst, args.retry_after)
        print(
            f"  {label:<16} inventory+revoke+verify {seconds:6.2f} s, {requests} requests, "
            f"{grants} grants, clean={clean}, requests before a Retry-After deadline: {early}"
        )


if __name__ == "__main__":
    main()
