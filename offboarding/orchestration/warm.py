"""The warm starter: flow-run processes forked from one that has imported everything already.

A flow-run process spends most of its start importing Prefect, the flows and their
connectors (seconds of CPU, each time a case starts and again each time it wakes from its
approval). The warm starter imports them once, then forks a process per flow run on request
of `offboarding.orchestration.warm_client`, the tiny command Prefect starts instead of
`python -m prefect.engine`. The forked process takes the client's environment, working
directory and standard streams, and runs exactly what `python -m prefect.engine` runs.

    python -m offboarding.orchestration.warm --socket /path/to.sock

Safe to fork: this process runs no thread, event loop, connection or Prefect client of its
own (checked before every fork: if another thread exists, the client is told to start cold).
Modules are imported before `gc.freeze()`, so the forked processes share their pages.
A forked process watches its client: when the client is gone (killed), it ends too.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any, TypeVar

T = TypeVar("T")
MAX_REQUEST = 1 << 20  # the client's environment, as JSON


def preload() -> list[str]:
    """Import what a flow-run process imports: Prefect's engine, the services its flows
    build, and this installation's flows (loaded from their files, as Prefect loads them)."""
    import prefect.engine
    import prefect.flow_engine  # noqa: F401
    from prefect._internal import metrics  # noqa: F401

    from offboarding.orchestration.prefect_tls import share_tls_contexts

    share_tls_contexts()  # a flow run makes a Prefect client for nearly every call
    return preload_services() + preload_entrypoints() + finish_lazy_setup()


def finish_lazy_setup() -> list[str]:
    """What libraries finish on first use, done here once instead of in every forked run
    (measured: a tenth of a flow run's CPU): SQLAlchemy's mapper configuration, and the
    pydantic models built on first use (many of Prefect's, with forward references)."""
    from pydantic import BaseModel
    from sqlalchemy.orm import configure_mappers

    import offboarding.domain.models  # noqa: F401 - the mapped classes

    configure_mappers()
    built = 0
    for model in _subclasses(BaseModel):
        if getattr(model, "__pydantic_complete__", True):
            continue
        try:  # as pydantic does on first use; one that cannot be built yet stays as it is
            if model.model_rebuild(raise_errors=False):
                built += 1
        except Exception:  # noqa: BLE001, S112 - left to first use, as without this step
            continue
    return [f"{built} models built"]


def _subclasses(cls: type[T]) -> list[type[T]]:
    found: list[type[T]] = []
    todo = [cls]
    while todo:
        sub: type[T]
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def preload_entrypoints() -> list[str]:
    """Prefect loads a flow from its entrypoint file by executing that file afresh in every
    flow-run process (`load_script_as_module`). Executed once here instead: a forked run
    gets the loaded module, unless the file changed since (then Prefect loads it as usual)."""
    from prefect.utilities import importtools

    from offboarding.orchestration.runner import entrypoint_files, project_root

    original = importtools.load_script_as_module
    loaded: dict[str, tuple[int, ModuleType]] = {}
    for file in entrypoint_files():
        path = (project_root() / file).resolve()
        loaded[str(path)] = (path.stat().st_mtime_ns, original(str(path)))

    def load_script_as_module(path: str) -> ModuleType:
        resolved = Path(path).resolve()
        known = loaded.get(str(resolved))
        with contextlib.suppress(OSError):
            if known is not None and resolved.stat().st_mtime_ns == known[0]:
                return known[1]
        return original(path)

    importtools.load_script_as_module = load_script_as_module
    return [f"{len(loaded)} entrypoint files"]


def preload_services() -> list[str]:
    """What a flow run builds its services from, imported and compiled here once: every
    connector kind (and the libraries they use), both database drivers, the compiled
    templates. Nothing is connected or opened."""
    import importlib

    from connectors.registry import ConnectorPluginError, known_kinds
    from offboarding.notification.rendering import compile_all, shared_templates

    for driver in ("psycopg", "sqlalchemy.dialects.postgresql.psycopg", "sqlite3"):
        with contextlib.suppress(ImportError):
            importlib.import_module(driver)
    try:
        connectors = known_kinds()
    except ConnectorPluginError:
        connectors = []  # a broken plugin: the flow run reports it, as a cold start would
    templates = compile_all(shared_templates())
    return [f"{len(connectors)} connector kinds", f"{templates} templates"]


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST + 8, 3)
    size = int.from_bytes(data[:8], "big")
    body = data[8:]
    while len(body) < size:
        more = conn.recv(size - len(body))
        if not more:
            raise ConnectionError("the client went away mid-request")
        body += more
    return json.loads(body), list(fds)


def watch_client(conn: socket.socket) -> None:
    """End this process when its client is gone (it was killed: so is the run it carried)."""

    def watch() -> None:
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="warm-client-watch", daemon=True).start()


def run_engine(argv: list[str]) -> int:
    """What `python -m prefect.engine` does, with settings read from this process's new
    environment (the imported modules saw the starter's)."""
    import runpy

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    sys.argv = ["prefect.engine", *argv]
    current = get_settings_context()
    try:
        with SettingsContext(profile=current.profile, settings=Settings()):
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """In the forked process: become the client's flow-run process; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds, strict=False):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        conn.sendall(f"pid {os.getpid()}\n".encode())
        watch_client(conn)
        code = run_engine(list(request["argv"]))
    except BaseException:  # noqa: BLE001 - reported as the exit code, like a crashed engine
        import traceback

        traceback.print_exc()
    finally:
        finish_like_an_interpreter()
        with contextlib.suppress(OSError):
            conn.sendall(f"exit {code}\n".encode())
        os._exit(code)


def finish_like_an_interpreter() -> None:
    """What a normal exit does before the process ends: Prefect's queue services (the API
    log worker among them) drain at thread shutdown, other clean-ups run at exit. Skipping
    them would lose the run's last log lines."""
    with contextlib.suppress(Exception):
        threading._shutdown()  # type: ignore[attr-defined]  # runs threading._register_atexit hooks
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()


def reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return


def die_with_parent() -> int:
    """SIGTERM this process when the process that started it dies (a killed runner, worker
    or service leaves no starter behind); returns that parent's pid for a fallback check."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    return parent


def serve(path: Path) -> None:
    stopping = False
    parent = die_with_parent()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)  # only this user's clients
    listener.listen(64)
    listener.settimeout(0.5)
    gc.freeze()  # what is imported now stays shared with every forked process
    sys.stdout.flush()
    try:
        while not stopping and os.getppid() == parent:
            reap()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            with conn:
                try:
                    conn.settimeout(10)
                    request, fds = read_request(conn)
                    conn.settimeout(None)
                except (OSError, ValueError, ConnectionError):
                    continue
                if threading.active_count() != 1:  # forking now would not be safe
                    with contextlib.suppress(OSError):
                        conn.sendall(b"refused\n")
                    for fd in fds:
                        os.close(fd)
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    child(conn, request, fds)
                run_id = request["env"].get("PREFECT__FLOW_RUN_ID", "?")
                sys.stderr.write(f"warm start of flow run {run_id}: process {pid}\n")
                for fd in fds:
                    os.close(fd)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    args = parser.parse_args()
    loaded = preload()
    sys.stderr.write(f"warm starter ready at {args.socket} ({', '.join(loaded)})\n")
    serve(args.socket)


if __name__ == "__main__":
    main()
