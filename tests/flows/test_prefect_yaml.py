"""`prefect deploy --all` works from prefect.yaml against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from support import prefect

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]


def deploy_all(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PREFECT, "--no-prompt", "deploy", "--all"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_prefect_deploy_all_creates_the_deployment_on_a_process_pool(stack) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PREFECT_API_URL": stack.running.api_url, "PWD": str(ROOT)}
    env.pop("OFFBOARDING_INSTANCE", None)
    subprocess.run(
        [*PREFECT, "work-pool", "create", "offboarding", "--type", "process"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    unnamed = deploy_all(env)  # the names would match no installation: refused
    assert unnamed.returncode != 0
    assert "set OFFBOARDING_INSTANCE" in unnamed.stdout + unnamed.stderr

    deployed = deploy_all({**env, "OFFBOARDING_INSTANCE": stack.settings.instance})
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    found = prefect("GET", f"{stack.running.api_url}/deployments/name/{stack.settings.deployment}")
    # `offboarding up` serves a deployment of the same name; deploy re-points it at the pool
    assert found.json()["work_pool_name"] == "offboarding"
    assert found.json()["entrypoint"] == "flows/offboard_leaver.py:offboard_leaver"
    assert found.json()["pull_steps"][0]["prefect.deployments.steps.set_working_directory"][
        "directory"
    ] == str(ROOT)
    retention = httpx.get(
        f"{stack.running.api_url}/deployments/name/{stack.settings.retention_deployment}"
    ).json()
    assert retention["work_pool_name"] == "offboarding"
    assert retention["schedules"][0]["schedule"]["cron"] == "30 3 * * *"


def test_the_embedded_runner_serves_exactly_the_deployments_of_prefect_yaml() -> None:
    """One source: `offboarding up` serves what `prefect deploy` would create."""
    from offboarding.orchestration.runner import deployments_file, served_deployments
    from offboarding.wiring.settings import Settings

    settings = Settings(instance="unit-test", connectors=[])
    served = {f"{d.flow_name}/{d.name}": d for d in served_deployments(settings.instance)}
    assert set(served) == {
        settings.deployment,
        settings.retention_deployment,
        settings.oversight_deployment,
    }
    spec = yaml.safe_load(deployments_file().read_text())
    for entry in spec["deployments"]:
        name = entry["name"].replace("{{ $OFFBOARDING_INSTANCE }}", settings.instance)
        (deployment,) = [d for d in served.values() if d.name == name]
        assert deployment.entrypoint == entry["entrypoint"]
        assert deployment.description == entry["description"]
        assert deployment.tags == entry["tags"]
        crons = [s.schedule.cron for s in deployment.schedules or []]  # type: ignore[union-attr]
        assert crons == [s["cron"] for s in entry.get("schedules", [])]
