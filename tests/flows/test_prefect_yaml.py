"""`prefect deploy --all` works from prefect.yaml against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_prefect_deploy_all_creates_the_deployment_on_a_process_pool(stack) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PREFECT_API_URL": stack.running.api_url, "PWD": str(ROOT)}
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run(
        [*prefect, "work-pool", "create", "offboarding", "--type", "process"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    deployed = subprocess.run(
        [*prefect, "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    found = httpx.get(
        f"{stack.running.api_url}/deployments/name/offboard-leaver/offboard-leaver"
    ).json()
    # `offboarding up` serves a deployment of the same name; deploy re-points it at the pool
    assert found["work_pool_name"] == "offboarding"
    assert found["entrypoint"] == "flows/offboard_leaver.py:offboard_leaver"
    assert found["pull_steps"][0]["prefect.deployments.steps.set_working_directory"][
        "directory"
    ] == str(ROOT)
    retention = httpx.get(
        f"{stack.running.api_url}/deployments/name/apply-retention/apply-retention"
    ).json()
    assert retention["work_pool_name"] == "offboarding"
    assert retention["schedules"][0]["schedule"]["cron"] == "30 3 * * *"
