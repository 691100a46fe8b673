"""The warm starter and its client, as real processes: what Prefect's runner or worker sees
when it starts a flow run with the warm command (no Prefect server needed: the engine's own
answers to a bad or unreachable run show which engine ran)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import until

from offboarding.orchestration.runner import WARM_COMMAND, warm_starter
from offboarding.orchestration.warm_client import SOCKET_ENV


@pytest.fixture(scope="module")
def starter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path_factory.mktemp("warm") / "starter.log"
    with open(log_path, "ab") as log, warm_starter(env=dict(os.environ), log=log) as path:
        assert path is not None, log_path.read_text()
        yield path, log_path


@pytest.fixture
def silent_api() -> Iterator[str]:
    """A Prefect API that accepts connections and never answers: the engine waits on it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def client(run_id: str, socket_path: str | None, api: str = "http://127.0.0.1:9/api"):  # type: ignore[no-untyped-def]
    """The warm command as a process worker starts it: in a directory of its own."""
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    env.update(PREFECT__FLOW_RUN_ID=run_id, PREFECT_API_URL=api)
    if socket_path:
        env[SOCKET_ENV] = socket_path
    return subprocess.Popen(
        WARM_COMMAND.split(),
        env=env,
        cwd=tempfile.mkdtemp(prefix="flow-run-"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def forks_for(log: Path, run_id: str) -> list[int]:
    prefix = f"warm start of flow run {run_id}: process "
    return [int(line[len(prefix) :]) for line in log.read_text().splitlines() if prefix in line]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose (its parent reaps it on its next pass)
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_the_client_imports_nothing_but_the_standard_library(tmp_path: Path) -> None:
    """What makes it fast: -S (no site), and a script that imports only the stdlib; run
    from elsewhere, as a process worker runs it (in a temporary directory)."""
    python, _, script = WARM_COMMAND.split()
    done = subprocess.run(
        [
            python,
            "-S",
            "-c",
            f"import runpy, sys; runpy.run_path({script!r});"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('prefect', 'pydantic', 'sqlalchemy', 'httpx', 'anyio', 'offboarding')))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "[]"


def test_a_run_starts_forked_from_the_warm_starter_and_its_exit_code_comes_back(starter) -> None:  # type: ignore[no-untyped-def]
    path, log = starter
    run_id = "not-a-run-id-" + uuid.uuid4().hex[:6]
    process = client(run_id, path)
    output, _ = process.communicate(timeout=120)
    # the engine ran (it refused the id) in a process forked by the starter
    assert process.returncode == 1
    assert "Invalid flow run id" in output
    assert len(forks_for(log, run_id)) == 1


def test_without_a_warm_starter_the_client_starts_the_engine_cold(tmp_path: Path) -> None:
    run_id = "cold-" + uuid.uuid4().hex[:6]
    for socket_path in (None, str(tmp_path / "nobody-listens.sock")):
        process = client(run_id, socket_path)
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 1
        assert "Invalid flow run id" in output


def test_sigterm_to_the_client_reaches_the_forked_run(starter, silent_api) -> None:  # type: ignore[no-untyped-def]
    path, log = starter
    run_id = str(uuid.uuid4())
    process = client(run_id, path, silent_api)
    until(lambda: forks_for(log, run_id), "the run to be forked")
    (child,) = forks_for(log, run_id)
    assert alive(child)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode != 0  # terminated before it could run anything
    until(lambda: not alive(child), "the forked run to end with its client")


def test_a_killed_client_takes_its_forked_run_with_it(starter, silent_api) -> None:  # type: ignore[no-untyped-def]
    path, log = starter
    run_id = str(uuid.uuid4())
    process = client(run_id, path, silent_api)
    until(lambda: forks_for(log, run_id), "the run to be forked")
    (child,) = forks_for(log, run_id)
    process.kill()
    process.communicate(timeout=60)
    until(lambda: not alive(child), "the forked run to end when its client is killed")


def test_two_runs_at_once_get_a_process_each(starter, silent_api) -> None:  # type: ignore[no-untyped-def]
    path, log = starter
    run_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    processes = [client(run_id, path, silent_api) for run_id in run_ids]
    until(lambda: all(forks_for(log, r) for r in run_ids), "both runs to be forked")
    children = {forks_for(log, r)[0] for r in run_ids}
    assert len(children) == 2 and all(alive(c) for c in children)
    for process in processes:
        process.kill()
        process.communicate(timeout=60)
    until(lambda: not any(alive(c) for c in children), "both forked runs to end")


def test_a_stopped_starter_leaves_the_client_to_start_cold(tmp_path: Path) -> None:
    with warm_starter(env=dict(os.environ)) as path:
        assert path is not None
    assert not Path(path).exists()
    process = client("after-stop", path)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 1 and "Invalid flow run id" in output, output


def test_a_starter_whose_parent_is_killed_stops_too() -> None:
    """A runner or worker killed with SIGKILL leaves no warm starter behind."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\n"
            "from offboarding.orchestration.runner import warm_starter\n"
            "with warm_starter() as path:\n"
            "    print(path, flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        socket_path = parent.stdout.readline().strip()
        assert socket_path.endswith(".sock"), socket_path
        starters = [
            pid
            for pid in children_of(parent.pid)
            if b"orchestration.warm" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(starters) == 1
        parent.kill()
        parent.wait()
        until(lambda: not alive(starters[0]), "the starter to stop with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found
