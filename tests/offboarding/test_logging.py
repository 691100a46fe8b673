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


def test_with_prefect_imported_each_line_is_written_once() -> None:
    """Prefect puts a console handler on the root logger when imported; ours replaces it
    (it wrote every line of ours a second time), and a library's warning still shows."""
    script = SCRIPT.replace("import logging, structlog", "import logging, structlog, prefect")
    script += 'logging.getLogger("some.library").warning("a library warning")\n'
    done = subprocess.run(
        [sys.executable, "-c", script.format(json="")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert sum("revoked" in line for line in lines) == 1, lines
    assert sum("plain stdlib line" in line for line in lines) == 1, lines
    library = [json.loads(line) for line in lines if "a library warning" in line]
    assert len(library) == 1 and library[0]["logger"] == "some.library"
