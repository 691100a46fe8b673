"""HRIS intake under concurrency: bursts of signed events, copies of one event, on SQLite
and on PostgreSQL.

Starts the whole service (`run_service`: Prefect server, runner, web app with its
dispatcher) once per service database, against a throwaway slapd holding the demo
organisation plus enough extra employees for every burst. For each concurrency level N,
N signed `employee.terminated` events for N distinct employees are released at the same
moment (one thread each, from a separate client process), then the benchmark waits until
every case has its Prefect flow run. Then 10 copies of one event are released together.

Every event has a last working day 30 days ahead: its run is created SCHEDULED and does
not execute, so the figures are intake + run creation, not the offboarding flows.

    .venv/bin/python benchmarks/intake.py [--levels 2,20,50] [--databases sqlite,postgresql]
        [--copies 10] [--rounds 1] [--deadline 180] [--prefect-postgres] [--web-processes 1]
        [--keep]

Exits 1 when a target is missed (any 5xx or failed request, a burst event not answered
202, cases != N, runs != N, runs missing in Prefect, /healthz not 200, copies of one
event giving anything but one 202 and 200/409 for the rest, or more than one case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import proctable  # benchmarks/proctable.py
import sqlalchemy
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain.models import Case
from offboarding.intake.client import termination_event
from offboarding.intake.hris import SIGNATURE_HEADER, sign
from offboarding.wiring.db import driver_url, make_engine
from offboarding.wiring.logging import configure_logging
from offboarding.wiring.processes import free_port
from offboarding.wiring.service import RunningService, prefect_env, run_service
from offboarding.wiring.settings import Settings

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_HOST = "postgres@127.0.0.1:5432"
DAYS_AHEAD = 30
REQUEST_TIMEOUT = 60.0


# -- the client: runs in its own process, so it never shares a GIL with the web app -----


def fire(
    url: str,
    calls: list[tuple[bytes, str]],
    health_url: str | None = None,
) -> dict[str, Any]:
    """POST every (body, signature) from its own thread, all released by one Barrier.

    With `health_url`, one more thread GETs it once half of the POSTs have been answered.
    Latency: request sent -> response read (each thread has its own client, made before
    the barrier, so connection setup is measured and client construction is not).
    """
    n = len(calls)
    released: list[float] = []
    cpu_at_release: list[float] = []

    def release() -> None:
        released.append(time.time())
        cpu_at_release.append(time.process_time())

    gate = threading.Barrier(n + (1 if health_url else 0), action=release)
    answered = 0
    changed = threading.Condition()

    def post(call: tuple[bytes, str]) -> tuple[str, float, str]:
        nonlocal answered
        body, header = call
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            gate.wait()
            start = time.perf_counter()
            try:
                response = client.post(
                    url,
                    content=body,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: header},
                )
                status, text = str(response.status_code), response.text[:500]
            except httpx.HTTPError as exc:
                status, text = f"error:{type(exc).__name__}", str(exc)[:500]
            elapsed = (time.perf_counter() - start) * 1000
        with changed:
            answered += 1
            changed.notify_all()
        return status, elapsed, text

    def health() -> dict[str, Any]:
        assert health_url is not None
        with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
            gate.wait()
            with changed:
                changed.wait_for(lambda: answered >= n // 2, timeout=REQUEST_TIMEOUT)
                before = answered
            start = time.perf_counter()
            try:
                status = str(client.get(health_url).status_code)
            except httpx.HTTPError as exc:
                status = f"error:{type(exc).__name__}"
            elapsed = (time.perf_counter() - start) * 1000
            with changed:
                after = answered
        return {"status": status, "ms": elapsed, "answered_before": before, "answered_after": after}

    with ThreadPoolExecutor(n + 1) as pool:
        checked = pool.submit(health) if health_url else None
        results = list(pool.map(post, calls))
        health_result = checked.result() if checked else None
    return {
        "released": released[0],
        "results": results,
        "health": health_result,
        "client_cpu": time.process_time() - cpu_at_release[0],  # from release to the last answer
    }


def ready() -> int:
    return os.getpid()


# -- helpers --------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (for N=2, p99 is the max)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def codes(statuses: list[str]) -> str:
    return ", ".join(f"{code} x{count}" for code, count in sorted(Counter(statuses).items()))


def add_employees(directory: LocalDirectory, count: int, start: int = 5001) -> list[str]:
    """Extra inetOrgPerson entries, as `seed_demo_org` adds people; their employee ids."""
    ids: list[str] = []
    conn = directory.admin_connection()
    try:
        for number in range(start, start + count):
            employee_id, uid = f"E{number}", f"bench{number}"
            ok = conn.add(
                f"uid={uid},{directory.users_base}",
                ["inetOrgPerson"],
                {
                    "uid": uid,
                    "cn": f"Bench Leaver {number}",
                    "sn": f"Leaver {number}",
                    "givenName": "Bench",
                    "displayName": f"Bench Leaver {number}",
                    "mail": f"{uid}@example.test",
                    "employeeNumber": employee_id,
                    "departmentNumber": "Engineering",
                    "preferredLanguage": "en" if number % 2 else "nl",
                },
            )
            if not ok:
                raise RuntimeError(f"could not add {employee_id}: {conn.result}")
            ids.append(employee_id)
    finally:
        conn.unbind()
    return ids


def event_for(employee_id: str, org: DemoOrg) -> dict[str, Any]:
    uid = f"bench{employee_id[1:]}"
    return termination_event(
        employee_id=employee_id,
        email=f"{uid}@example.test",
        display_name=f"Bench Leaver {employee_id[1:]}",
        requested_by=org.requester_id,
        last_working_day=date.today() + timedelta(days=DAYS_AHEAD),
    )


def signed(secret: str, event: dict[str, Any]) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    return body, sign(secret, body)


@contextlib.contextmanager
def postgres_database(purpose: str) -> Iterator[str]:
    """A throwaway database `offboarding_bench_<random>`, dropped afterwards."""
    admin = sqlalchemy.create_engine(driver_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"offboarding_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"   dropped the {purpose} database {name}")


def cases_of(engine: Engine, employee_ids: list[str]) -> list[Case]:
    with Session(engine) as session:
        return list(session.exec(select(Case).where(col(Case.employee_id).in_(employee_ids))))


def wait_for_runs(
    engine: Engine, employee_ids: list[str], deadline: float
) -> tuple[list[Case], float | None]:
    """Poll until every employee's case has a flow_run_id (or the deadline passes).

    Returns the cases last seen and the wall-clock time the last run id was first seen."""
    end = time.monotonic() + deadline
    while True:
        cases = cases_of(engine, employee_ids)
        if len(cases) >= len(employee_ids) and all(c.flow_run_id for c in cases):
            return cases, time.time()
        if time.monotonic() > end:
            return cases, None
        time.sleep(0.1)


def prefect_runs(api_url: str, run_ids: list[str]) -> list[dict[str, Any]]:
    if not run_ids:
        return []
    response = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={"flow_runs": {"id": {"any_": run_ids}}, "limit": len(run_ids)},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def created_at(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["created"].replace("Z", "+00:00")).timestamp()


def describe_database(url: str) -> str:
    if url.startswith("sqlite"):
        return f"SQLite ({url.split('///', 1)[-1]})"
    return f"PostgreSQL ({url.split('@', 1)[-1]})"


@dataclass
class Report:
    misses: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.misses.append(what)
            print(f"   MISSED: {what}")


# -- one service database ---------------------------------------------------------------


def burst(
    running: RunningService,
    settings: Settings,
    engine: Engine,
    org: DemoOrg,
    client: ProcessPoolExecutor,
    leavers: list[str],
    *,
    with_health: bool,
    deadline: float,
    report: Report,
    label: str,
) -> float:
    """One burst of distinct events; its p99 latency (ms)."""
    n = len(leavers)
    secret = settings.hris_secret.get_secret_value()
    calls = [signed(secret, event_for(e, org)) for e in leavers]
    health_url = f"{running.web_url}/healthz" if with_health else None
    woken = running.wakes.wakes if running.wakes is not None else 0
    cpu_before = proctable.cpu_by_process(os.getpid())
    fired = client.submit(fire, f"{running.web_url}/hris/events", calls, health_url).result()
    cpu = proctable.cpu_used(cpu_before, proctable.cpu_by_process(os.getpid()))
    statuses = [status for status, _, _ in fired["results"]]
    latencies = [ms for _, ms, _ in fired["results"]]
    print(
        f"N={n}: {codes(statuses)}; latency p50 {percentile(latencies, 50):.0f} ms, "
        f"p99 {percentile(latencies, 99):.0f} ms, max {max(latencies):.0f} ms"
    )
    if running.wakes is not None:  # each case another web process stores wakes the dispatcher
        print(
            f"   stored by the other web processes: {running.wakes.wakes - woken} of {n} "
            "(their wake-ups received by the time the last answer was read)"
        )
    # the client's own CPU counts from the release (its clients were made before it)
    cpu["benchmark's HR client"] = fired["client_cpu"]
    busy = sorted(((s, k) for k, s in cpu.items() if s >= 0.005), reverse=True)
    print(
        f"   CPU used during the burst: {sum(cpu.values()):.2f} s in all, "
        f"{sum(cpu.values()) / n * 1000:.1f} ms per event ("
        + ", ".join(f"{kind} {seconds:.2f}" for seconds, kind in busy)
        + ")"
    )
    odd = [(s, t) for s, _, t in fired["results"] if s != "202"]
    for status, text in odd[:3]:
        print(f"   answer {status}: {text[:300]}")
    report.check(
        not any(s.startswith(("5", "error")) for s in statuses),
        f"{label} N={n}: 5xx or failed requests ({codes(statuses)})",
    )
    report.check(statuses == ["202"] * n, f"{label} N={n}: not every event answered 202")
    health = fired["health"]
    if health is not None:
        print(
            f"   /healthz during the burst: {health['status']} in {health['ms']:.0f} ms "
            f"(sent after {health['answered_before']}/{n} answers; "
            f"{health['answered_after']}/{n} answered when it returned)"
        )
        report.check(health["status"] == "200", f"{label} N={n}: /healthz {health['status']}")

    cases, all_linked = wait_for_runs(engine, leavers, deadline)
    run_ids = sorted({c.flow_run_id for c in cases if c.flow_run_id})
    in_prefect = prefect_runs(running.api_url, run_ids)
    states = Counter(r["state"]["type"] for r in in_prefect)
    last_created = max((created_at(r) for r in in_prefect), default=None)
    released = fired["released"]
    timing = (
        f"last run created in Prefect +{last_created - released:.2f} s after release"
        if last_created is not None
        else "no run in Prefect"
    )
    timing += (
        f", every case linked to its run (seen by polling) +{all_linked - released:.2f} s"
        if all_linked is not None
        else f", NOT every case had a run after {deadline:.0f} s"
    )
    print(
        f"   cases stored {len(cases)}/{n}, runs created {len(run_ids)}/{n} "
        f"(distinct flow_run_ids), found in Prefect {len(in_prefect)}/{n} "
        f"({', '.join(f'{k} x{v}' for k, v in sorted(states.items()))}); {timing}"
    )
    report.check(len(cases) == n, f"{label} N={n}: {len(cases)} cases stored, expected {n}")
    report.check(len(run_ids) == n, f"{label} N={n}: {len(run_ids)} runs created, expected {n}")
    report.check(len(in_prefect) == n, f"{label} N={n}: {len(in_prefect)} runs found in Prefect")
    return percentile(latencies, 99)


def copies_of_one(
    running: RunningService,
    settings: Settings,
    engine: Engine,
    org: DemoOrg,
    client: ProcessPoolExecutor,
    leaver: str,
    copies: int,
    *,
    deadline: float,
    report: Report,
    label: str,
) -> None:
    event = event_for(leaver, org)
    call = signed(settings.hris_secret.get_secret_value(), event)
    fired = client.submit(fire, f"{running.web_url}/hris/events", [call] * copies).result()
    statuses = [status for status, _, _ in fired["results"]]
    latencies = [ms for _, ms, _ in fired["results"]]
    with Session(engine) as session:
        for_event = list(session.exec(select(Case).where(Case.event_id == event["id"])))
    for_employee = cases_of(engine, [leaver])
    print(
        f"copies: {copies} x one event ({leaver}): {codes(statuses)}; cases for the event "
        f"{len(for_event)}, for the employee {len(for_employee)}; latency "
        f"p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms"
    )
    shown: set[str] = set()
    for status, _, text in fired["results"]:
        if status not in ("200", "202") and status not in shown:
            shown.add(status)
            print(f"   a {status} answer to a copy: {text[:300]}")
    report.check(
        not any(s.startswith(("5", "error")) for s in statuses),
        f"{label} copies: 5xx or failed requests ({codes(statuses)})",
    )
    report.check(
        statuses.count("202") == 1 and set(statuses) <= {"200", "202", "409"},
        f"{label} copies: expected one 202 and 200/409 for the rest ({codes(statuses)})",
    )
    report.check(
        len(for_event) == 1 and len(for_employee) == 1,
        f"{label} copies: {len(for_event)} cases for the event, {len(for_employee)} for "
        "the employee (expected 1)",
    )
    _, linked = wait_for_runs(engine, [leaver], deadline)
    report.check(linked is not None, f"{label} copies: the case got no run within {deadline} s")


def bench_database(
    kind: str,
    home: Path,
    directory: LocalDirectory,
    org: DemoOrg,
    leavers: Iterator[str],
    client: ProcessPoolExecutor,
    args: argparse.Namespace,
    report: Report,
) -> None:
    with contextlib.ExitStack() as stack:
        database_url = None
        if kind == "postgresql":
            name = stack.enter_context(postgres_database("service"))
            database_url = f"postgresql://{PG_HOST}/{name}"
            if args.prefect_postgres:
                prefect_db = stack.enter_context(postgres_database("Prefect"))
                os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
                    f"postgresql+asyncpg://{PG_HOST}/{prefect_db}"
                )
                stack.callback(os.environ.pop, "PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        settings = Settings(
            home=home,
            database_url=database_url,
            port=free_port(),
            prefect_port=free_port(),
            hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
            connectors=[directory.connector_config(managers_group=org.managers_group_dn)],
            web_processes=args.web_processes,
        )
        prefect_url = prefect_env(home, settings.prefect_port)[
            "PREFECT_SERVER_DATABASE_CONNECTION_URL"
        ]
        print(
            f"\n== {kind}: service database {describe_database(settings.resolved_database_url)};"
            f" Prefect's database {describe_database(prefect_url)}"
        )
        started = time.perf_counter()
        running = stack.enter_context(run_service(settings, quiet=True))
        print(f"   service up in {time.perf_counter() - started:.1f} s; data dir {home}")
        # the web app runs in this process: keep its warnings and tracebacks with the others
        web_log = logging.FileHandler(home / "logs" / "web.log")
        web_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        for logger in (logging.getLogger(), logging.getLogger("uvicorn")):
            logger.addHandler(web_log)
            stack.callback(logger.removeHandler, web_log)
        engine = make_engine(settings.resolved_database_url)
        stack.callback(engine.dispose)

        warm = next(leavers)
        body, header = signed(settings.hris_secret.get_secret_value(), event_for(warm, org))
        t0 = time.perf_counter()
        answer = httpx.post(
            f"{running.web_url}/hris/events",
            content=body,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: header},
            timeout=REQUEST_TIMEOUT,
        )
        took = (time.perf_counter() - t0) * 1000
        _, linked = wait_for_runs(engine, [warm], args.deadline)
        print(
            f"   warm-up (not counted): one event {answer.status_code} in {took:.0f} ms, "
            + (
                f"its run linked after {time.perf_counter() - t0:.2f} s"
                if linked
                else "NO run linked"
            )
        )
        report.check(answer.status_code == 202 and linked is not None, f"{kind} warm-up failed")

        biggest = max(args.levels)
        for n in args.levels:
            p99s = [
                burst(
                    running,
                    settings,
                    engine,
                    org,
                    client,
                    [next(leavers) for _ in range(n)],
                    with_health=n == biggest,
                    deadline=args.deadline,
                    report=report,
                    label=kind,
                )
                for _ in range(args.rounds)
            ]
            if args.rounds > 1:
                shown = ", ".join(f"{p:.0f}" for p in p99s)
                print(
                    f"N={n} over {args.rounds} rounds: p99 {shown} ms; median "
                    f"{statistics.median(p99s):.0f} ms, under 200 ms in "
                    f"{sum(p < 200 for p in p99s)} of {args.rounds}"
                )
        copies_of_one(
            running,
            settings,
            engine,
            org,
            client,
            next(leavers),
            args.copies,
            deadline=args.deadline,
            report=report,
            label=kind,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--levels",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[2, 20, 50],
        help="concurrency levels, comma-separated (default 2,20,50)",
    )
    parser.add_argument(
        "--databases",
        type=lambda text: text.split(","),
        default=["sqlite", "postgresql"],
        help="service databases, comma-separated: sqlite, postgresql",
    )
    parser.add_argument("--copies", type=int, default=10, help="copies of one event (10)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="bursts per level, each with new leavers (1)"
    )
    parser.add_argument(
        "--deadline", type=float, default=180, help="seconds to wait for the runs (180)"
    )
    parser.add_argument(
        "--prefect-postgres",
        action="store_true",
        help="on the postgresql round, Prefect's own database on PostgreSQL too",
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="web processes sharing the service's port (the setting web_processes; 1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs afterwards")
    args = parser.parse_args()
    if unknown := set(args.databases) - {"sqlite", "postgresql"}:
        parser.error(f"unknown databases: {sorted(unknown)}")
    configure_logging(level=logging.WARNING)

    began = time.perf_counter()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (1/5/15 min); Python {platform.python_version()} on {platform.system()}"
    )
    print(
        f"events: last working day {date.today() + timedelta(days=DAYS_AHEAD)} "
        f"({DAYS_AHEAD} days ahead), so each run is created SCHEDULED and does not execute: "
        "the figures are intake + run creation, not the offboarding flows"
    )
    print(
        "client: a separate process, one thread and one new HTTP connection per request, "
        "released together by a threading.Barrier; latency = request sent -> response read; "
        "percentiles are nearest-rank (p99 of fewer than 100 requests is the max)"
    )

    tmp = Path(tempfile.mkdtemp(prefix="offboarding-bench-"))
    report = Report()
    per_database = 1 + sum(args.levels) * args.rounds + 1  # warm-up, the bursts, the copies
    spawn = multiprocessing.get_context("spawn")
    try:
        with (
            ProcessPoolExecutor(1, mp_context=spawn) as client,
            LocalDirectory.start(tmp / "slapd", admin_password=secrets.token_urlsafe(16)) as d,
        ):
            client.submit(ready).result()  # the client process is up before anything is timed
            org = seed_demo_org(d, password="Bench-" + secrets.token_urlsafe(8))
            extra = add_employees(d, per_database * len(args.databases))
            print(
                f"directory: demo organisation ({len(org.employee_ids)} people) + {len(extra)} "
                f"extra employees ({extra[0]}..{extra[-1]}), distinct leavers per level"
            )
            leavers = iter(extra)
            for kind in args.databases:
                bench_database(kind, tmp / kind, d, org, leavers, client, args, report)
    finally:
        elapsed = time.perf_counter() - began
        keep = args.keep or bool(report.misses) or sys.exc_info()[0] is not None
        if keep:
            print(f"\ndata dirs kept in {tmp} (service logs in <database>/logs/)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal time {elapsed:.0f} s")
    if report.misses:
        print(f"{len(report.misses)} target(s) missed:")
        for miss in report.misses:
            print(f" - {miss}")
        raise SystemExit(1)
    print(
        "all targets met: no 5xx, every burst event 202 with one case and one run "
        "(present in Prefect), copies of one event: one case"
    )


if __name__ == "__main__":
    main()
