from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging, structlog
from offboarding.wiring.logging import configure_logging, bind_case
configure_logging({json})
bind_case("case-1")
log = structlog.get_logger("offboarding.x")
log.info("revoked", connector="directory", bind_password="hunter2")
logging.getLogger("offboarding.y").warning("plain stdlib line")
"""


def run(json_arg: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(json=json_arg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stderr


def test_not_on_a_terminal_lines_are_json_with_the_case_bound_and_secrets_masked() -> None:
    lines = [json.loads(line) for line in run("").splitlines()]  # stderr is a pipe here
    first, second = lines
    assert first["event"] == "revoked"
    assert first["case_id"] == "case-1" and first["connector"] == "directory"
    assert first["level"] == "info" and first["logger"] == "offboarding.x" and first["timestamp"]
    assert first["bind_password"] == "**********"
    assert second["event"] == "plain stdlib line" and second["level"] == "warning"


def test_console_output_when_asked_for() -> None:
    text = run("json=False")
    assert "revoked" in text and "case_id=case-1" in text
    assert "hunter2" not in text
