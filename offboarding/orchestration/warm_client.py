"""The flow-run command of a warm start: hand this process's run to the warm starter.

Prefect starts `python -S …/offboarding/orchestration/warm_client.py` where it would start
`python -m prefect.engine` (the runner, or a process worker through the deployment's
`command`). This process imports nothing but the standard library (-S: not even site), so it
is up in milliseconds. It passes its environment, working directory and standard streams to
the warm starter (`offboarding.orchestration.warm`), which forks a process that has Prefect
and the flows imported already; it forwards SIGTERM/SIGINT to that process and exits with
its exit code. To Prefect it is the flow-run process: killed, the run it carried dies too.

No warm starter (OFFBOARDING_WARM_SOCKET unset, or nobody listening): it becomes
`python -m prefect.engine` itself (exec), so a run is never lost to a missing starter.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

SOCKET_ENV = "OFFBOARDING_WARM_SOCKET"
# Exit code when the forked process vanished without reporting (killed by a signal):
# non-zero, so Prefect's runner marks the run crashed, as for a killed engine process.
LOST = 1


def cold_start() -> None:
    """Become the ordinary engine process (a new interpreter, with site)."""
    python = sys.executable
    os.execv(python, [python, "-m", "prefect.engine", *sys.argv[1:]])  # noqa: S606


def connect(path: str) -> socket.socket | None:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:
        client.close()
        return None
    return client


def main() -> None:
    path = os.environ.get(SOCKET_ENV)
    conn = connect(path) if path else None
    if conn is None:
        cold_start()
        return
    request = json.dumps(
        {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
    ).encode()
    socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
    child: list[int] = []
    pending: list[int] = []  # a signal that came before the child's pid did

    def forward(signum: int, _frame: object) -> None:
        if not child:
            pending.append(signum)
            return
        try:
            os.kill(child[0], signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    reader = conn.makefile("r", encoding="ascii")
    for line in reader:
        word, _, value = line.strip().partition(" ")
        if word == "pid":
            child.append(int(value))
            for signum in pending:
                forward(signum, None)
        elif word == "exit":
            sys.exit(int(value))
        elif word == "refused":  # the starter could not fork: start cold
            conn.close()
            cold_start()
            return
    if not child:  # the starter closed before forking (stopping): start cold
        cold_start()
        return
    sys.exit(LOST)


if __name__ == "__main__":
    main()
