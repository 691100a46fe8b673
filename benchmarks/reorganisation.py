"""A reorganisation: N leavers at once, from HR's event to every grant verified gone.

For each N: N signed termination events released together (intake), then, as each case's
approval emails arrive in the outbox, the approvals a manager gives (GET the link, POST
approve; two different managers when the policy asks for two), then wait until every run
has completed, and check at the peers themselves that each leaver is out of every group,
locked and unable to sign in (slapd), and out of the SCIM app's group and inactive. The
SCIM app answers every request 100 ms late and throttles (429 with Retry-After); a request
for a resource sent again before the Retry-After it was given is counted (must be 0).

Then the floor: a bare Prefect flow that suspends and is resumed (POST /resume), run on
the same server and the same kind of worker, resume → Completed, median of --floor-rounds.

    .venv/bin/python benchmarks/reorganisation.py --leavers 1 10 [--database postgresql]
        [--workers 1] [--concurrency 4] [--web-processes 1] [--approvals 1] [--floor-rounds 5]

`--database postgresql` (default) runs production mode (`offboarding up --production`:
PostgreSQL for the service and for Prefect, a process work pool and its workers);
`--database sqlite` the embedded default (SQLite, one runner).
Peak RSS is sampled from /proc every 0.25 s, per kind of process.
"""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import json
import math
import os
import re
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow  # the rest is imported where used: the floor's runs load this file

if TYPE_CHECKING:
    import httpx

    from demo.directory import LocalDirectory
    from demo.organisation import DemoOrg
    from offboarding.wiring.service import RunningService
    from offboarding.wiring.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LINK = re.compile(r"https?://[^\s\"'<>]+/approvals/[A-Za-z0-9._\-]+")
CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
BENCH_GROUP = "bench-team"
SCIM_GROUP = "bench-apex-users"


@flow(name="bench-floor", persist_result=True)
def bare_floor() -> str:
    """Nothing but a suspend, as the case flow waits for an approval."""
    from prefect.flow_runs import suspend_flow_run

    suspend_flow_run(key="approval", timeout=3600)
    return "resumed"


# -- helpers -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (for a handful of values, p99 is the max)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def stamp(value: Any) -> float:
    """A Prefect or database time as a Unix timestamp (naive times are UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


class SlowThrottledApp:
    """WSGI middleware for the SCIM app: every answer `latency` seconds late; more than
    `rate` requests in one second get 429 with Retry-After: 1. A request for a resource
    that got a 429 is counted when it arrives after that 429 was sent and before its
    Retry-After had passed, whichever process sends it (one that arrives before the 429
    left the server was sent before anyone could know)."""

    def __init__(self, app: Any, *, latency: float, rate: float) -> None:
        self.app, self.latency, self.rate = app, latency, rate
        self.lock = threading.Lock()
        self.recent: list[float] = []
        self.told: dict[str, tuple[float, float]] = {}  # key -> (429 sent, Retry-After over)
        self.requests = self.throttled = self.too_early = 0
        self.early: list[str] = []  # which requests came before their Retry-After

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        key = (
            f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}"
        )
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            sent, over = self.told.get(key, (0.0, 0.0))
            if sent <= now < over:
                self.too_early += 1
                self.early.append(f"{key} ({over - now:.2f} s early)")
            self.recent = [t for t in self.recent if t > now - 1.0] + [now]
            throttle = len(self.recent) > self.rate
            if throttle:
                self.throttled += 1
        time.sleep(self.latency)
        if throttle:
            with self.lock:
                answered = time.monotonic()  # when the 429 leaves (after the latency)
                self.told[key] = (answered, answered + 1.0)
            start_response(
                "429 Too Many Requests",
                [("Retry-After", "1"), ("Content-Type", "application/scim+json")],
            )
            return [b'{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"429"}']
        return self.app(environ, start_response)


@dataclass
class RssSampler:
    """Peak resident memory per kind of process under this one, sampled from /proc."""

    peaks: dict[str, float] = field(default_factory=dict)  # kind -> MiB, largest process
    totals: dict[str, float] = field(default_factory=dict)  # kind -> MiB, all of the kind
    counts: dict[str, int] = field(default_factory=dict)  # kind -> most processes at once
    # CPU seconds per kind since reset(): each process's last reading minus its first
    cpu_first: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, tuple[str, float]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        import proctable  # benchmarks/proctable.py (this file is also loaded by flow runs)

        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for pid in proctable.process_tree(os.getpid()):
            try:
                cmdline = proctable.command_line(pid)
                status = Path(f"/proc/{pid}/status").read_text()
                ppid = re.search(r"PPid:\s+(\d+)", status)
                parent = proctable.command_line(int(ppid.group(1))) if ppid else ""
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            kind = proctable.kind_of(cmdline, pid, parent)
            self.note_cpu(pid, kind)
            rss = re.search(r"VmRSS:\s+(\d+) kB", status)
            # the total counts proportional memory (PSS): forked flow runs share most of
            # their pages with the warm starter, which RSS would count once per process
            pss = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
            if kind is None or rss is None:
                continue
            mib = int(rss.group(1)) / 1024
            self.peaks[kind] = max(self.peaks.get(kind, 0.0), mib)
            totals[kind] = totals.get(kind, 0.0) + (int(pss.group(1)) / 1024 if pss else mib)
            counts[kind] = counts.get(kind, 0) + 1
        for kind, total in totals.items():
            self.totals[kind] = max(self.totals.get(kind, 0.0), total)
            self.counts[kind] = max(self.counts.get(kind, 0), counts[kind])

    def note_cpu(self, pid: int, kind: str | None) -> None:
        import proctable

        seconds = proctable.cpu_seconds(pid)
        if seconds is None:
            return
        self.cpu_first.setdefault(pid, seconds if pid in self.cpu_last else 0.0)
        self.cpu_last[pid] = (kind or "other", seconds)

    def cpu(self) -> dict[str, float]:
        """CPU seconds per kind since reset() (a process's last half second is missed)."""
        used: dict[str, float] = {}
        for pid, (kind, seconds) in self.cpu_last.items():
            used[kind] = used.get(kind, 0.0) + seconds - self.cpu_first.get(pid, 0.0)
        return used

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.sample()

    def reset(self) -> None:
        self.peaks.clear()
        self.totals.clear()
        self.counts.clear()
        self.cpu_first = {pid: seconds for pid, (_kind, seconds) in self.cpu_last.items()}


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    import sqlalchemy

    from offboarding.wiring.db import driver_url

    admin = sqlalchemy.create_engine(driver_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"offboarding_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- the organisation: the demo's, plus the leavers -------------------------------------------


@dataclass
class Leaver:
    employee_id: str
    uid: str
    name: str

    @property
    def email(self) -> str:
        return f"{self.uid}@example.test"


def add_leavers(directory: LocalDirectory, org: DemoOrg, count: int, password: str) -> list[Leaver]:
    """`count` more employees, all in one team group (a manager stays in it: a groupOfNames
    never loses its last member) with a password, so each has something to revoke."""
    leavers = [
        Leaver(f"E{number}", f"bench{number}", f"Bench Leaver {number}")
        for number in range(6001, 6001 + count)
    ]
    conn = directory.admin_connection()
    try:
        for leaver in leavers:
            ok = conn.add(
                f"uid={leaver.uid},{directory.users_base}",
                ["inetOrgPerson"],
                {
                    "uid": leaver.uid,
                    "cn": leaver.name,
                    "sn": leaver.name.split()[-1],
                    "givenName": "Bench",
                    "displayName": leaver.name,
                    "mail": leaver.email,
                    "employeeNumber": leaver.employee_id,
                    "userPassword": password,
                    "preferredLanguage": "en",
                },
            )
            if not ok:
                raise RuntimeError(f"could not add {leaver.employee_id}: {conn.result}")
        conn.search(org.managers_group_dn, "(objectClass=*)", attributes=["member"])
        keeper = str(conn.entries[0]["member"].values[0])
        members = [keeper] + [f"uid={x.uid},{directory.users_base}" for x in leavers]
        if not conn.add(
            f"cn={BENCH_GROUP},{directory.groups_base}",
            ["groupOfNames"],
            {"cn": BENCH_GROUP, "member": members},
        ):
            raise RuntimeError(f"could not add the group {BENCH_GROUP}: {conn.result}")
    finally:
        conn.unbind()
    return leavers


def seed_scim(base_url: str, token: str, leavers: list[Leaver]) -> None:
    """Each leaver as a SCIM user (userName = email, as the connector matches), all in one
    group with a colleague who stays. Seeded before the latency and throttling start."""
    import httpx

    user = "urn:ietf:params:scim:schemas:core:2.0:User"
    with httpx.Client(
        base_url=f"{base_url}/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        ids = []
        for person in [*leavers, Leaver("E0000", "stays", "Stays Here")]:
            created = client.post(
                "Users",
                json={
                    "schemas": [user],
                    "userName": person.email,
                    "externalId": person.employee_id,
                    "displayName": person.name,
                    "emails": [{"value": person.email, "type": "work", "primary": True}],
                    "active": True,
                },
            )
            created.raise_for_status()
            ids.append(created.json()["id"])
        client.post(
            "Groups",
            json={
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": SCIM_GROUP,
                "members": [{"value": i, "type": "User"} for i in ids],
            },
        ).raise_for_status()


def scim_still_has(base_url: str, token: str, leaver: Leaver) -> list[str]:
    """What the SCIM app still grants the leaver (read directly, not through the service)."""
    import httpx

    left: list[str] = []
    with httpx.Client(
        base_url=f"{base_url}/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        found = client.get("Users", params={"filter": f'userName eq "{leaver.email}"'}).json()
        for resource in found.get("Resources", []):
            if resource.get("active"):
                left.append("active account")
            groups = client.get(
                "Groups", params={"filter": f'members[value eq "{resource["id"]}"]'}
            ).json()
            left += [f"group {g['displayName']}" for g in groups.get("Resources", [])]
    return left


def ldap_still_has(directory: LocalDirectory, leaver: Leaver, password: str) -> list[str]:
    import ldap3

    dn = f"uid={leaver.uid},{directory.users_base}"
    left: list[str] = []
    conn = directory.admin_connection()
    try:
        conn.search(
            directory.groups_base,
            f"(member={ldap3.utils.conv.escape_filter_chars(dn)})",
            attributes=["cn"],
        )
        left += [f"group {e.entry_dn}" for e in conn.entries]
        conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=["pwdAccountLockedTime"])
        if not (conn.entries and conn.entries[0]["pwdAccountLockedTime"].values):
            left.append("not locked")
    finally:
        conn.unbind()
    probe = ldap3.Connection(ldap3.Server(directory.url), user=dn, password=password)
    try:
        if probe.bind():
            left.append("can still sign in")
    finally:
        probe.unbind()
    return left


# -- one leaver's way through the service -----------------------------------------------------


class Outbox:
    """The approval emails in the outbox, each file read once, indexed by the cases asked
    for. Many leavers' approvers poll it: a poll costs little when nothing new arrived (the
    folder's mtime is unchanged; it is read again at least once a second regardless)."""

    RESCAN_SECONDS = 1.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.mails: list[tuple[str, str, list[str]]] = []  # (recipient, text, links)
        self.by_case: dict[str, list[tuple[str, str]]] = {}
        self.stamp: int | None = None
        self.scanned = float("-inf")

    def links_for(self, case_id: str) -> list[tuple[str, str]]:
        """(recipient, approval link) of the case's approval emails."""
        with self.lock:
            if case_id not in self.by_case:
                self.by_case[case_id] = [
                    (to, link)
                    for to, text, links in self.mails
                    if case_id in text
                    for link in links
                ]
            self._read_new()
            return list(self.by_case[case_id])

    def _read_new(self) -> None:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return
        now = time.monotonic()
        if stamp == self.stamp and now - self.scanned < self.RESCAN_SECONDS:
            return
        self.stamp, self.scanned = stamp, now
        for entry in os.scandir(self.path):
            if not entry.name.endswith(".eml") or entry.name in self.seen:
                continue
            self.seen.add(entry.name)
            message = email.message_from_bytes(
                Path(entry.path).read_bytes(), policy=email.policy.default
            )
            body = message.get_body(preferencelist=("plain",))
            text = body.get_content() if body is not None else ""  # type: ignore[union-attr]
            mail = (str(message["To"]), text, LINK.findall(text))
            self.mails.append(mail)
            for case_id, found in self.by_case.items():
                if case_id in text:
                    found.extend((mail[0], link) for link in mail[2])


def approve(link: str) -> float:
    """GET the page, POST approve (retrying while the run is on its way to suspending);
    returns when the POST was sent."""
    import httpx

    with httpx.Client(timeout=120) as browser:
        page = browser.get(link)
        while page.status_code != 200:
            time.sleep(0.1)
            page = browser.get(link)
        token = CSRF.search(page.text)
        if token is None:
            raise RuntimeError(f"no csrf_token on the approval page {page.text[:200]}")
        posted = time.time()
        result = browser.post(link, data={"decision": "approve", "csrf_token": token.group(1)})
        if result.status_code != 200:
            raise RuntimeError(f"approval POST answered {result.status_code}: {result.text[:200]}")
    return posted


@dataclass
class Timing:
    intake_ms: float = 0.0
    approved_at: float = 0.0
    verified_at: float = 0.0
    case_id: str = ""
    run_id: str = ""
    state: str = ""


def release_events(base_url: str, secret: str, events: list[dict[str, Any]]) -> list[Timing]:
    """Every leaver's event POSTed at the same moment from another process, one thread
    each (as HR's system would send them): the latency measured is the service's, not
    this process's, which also runs the service and the approvers' clients."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import intake as intake_benchmark  # benchmarks/intake.py: its burst client

    calls = [intake_benchmark.signed(secret, event) for event in events]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as client:
        fired = client.submit(intake_benchmark.fire, f"{base_url}/hris/events", calls).result()
    timings = []
    for event, (status, ms, text) in zip(events, fired["results"], strict=True):
        if status != "202":
            raise RuntimeError(f"{event['employee']['id']}: intake answered {status}: {text[:200]}")
        timings.append(Timing(intake_ms=ms, case_id=json.loads(text)["case_id"]))
    return timings


def one_leaver(
    running: RunningService,
    settings: Settings,
    outbox: Outbox,
    timing: Timing,
    approvals: int,
) -> Timing:
    """The approvers of one waiting case: its approval email, then approve by POST."""
    from offboarding.domain.cases import get_case
    from offboarding.wiring.db import make_engine

    links: list[tuple[str, str]] = []
    deadline = time.monotonic() + 600
    while len({to for to, _ in links}) < approvals:
        if time.monotonic() > deadline:
            raise RuntimeError(f"case {timing.case_id}: no approval emails within 600 s")
        time.sleep(0.5)
        links = outbox.links_for(timing.case_id)
    chosen = list({to: link for to, link in links}.values())[:approvals]
    timing.approved_at = max(approve(link) for link in chosen)
    engine = make_engine(settings.resolved_database_url)
    try:
        case = get_case(engine, timing.case_id)
        timing.run_id = str(case.flow_run_id) if case is not None else ""
    finally:
        engine.dispose()
    return timing


# -- the floor: a bare flow suspended and resumed on the same server ---------------------------


def post_retrying(url: str, *, sent: list[float] | None = None) -> httpx.Response:
    """POST `{}`; sent again (5 times at most) while Prefect answers 5xx, as Prefect on
    SQLite does while its database is busy. `sent` gets the time of each attempt."""
    import httpx

    for attempt in range(5):
        if sent is not None:
            sent.append(time.time())
        answer = httpx.post(url, json={}, timeout=30)
        if answer.status_code < 500:
            return answer
        time.sleep(1 + attempt)
    raise RuntimeError(f"Prefect answered {answer.status_code} five times to {url}")


def floor(running: RunningService, rounds: int) -> list[float]:
    """resume POST → Completed of `bare_floor`, run by a process worker like the case flow."""
    import asyncio
    import subprocess

    from prefect.client.orchestration import PrefectClient

    from offboarding.orchestration.runner import prepare_work_pool
    from offboarding.wiring.service import worker_command

    api = running.api_url
    pool, worker = running.work_pool, None
    if pool is None:  # embedded mode has no pool: one of its own, with one worker
        pool = "bench-floor"
        asyncio.run(_with_client(api, lambda c: prepare_work_pool(c, pool, 4)))
        env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        worker = subprocess.Popen(
            worker_command(pool, "bench-floor-worker"),
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # stopped with its group (it outlived the benchmark)
        )

    async def register(client: PrefectClient) -> Any:
        flow_id = await client.create_flow_from_name("bench-floor")
        return await client.create_deployment(
            flow_id=flow_id,
            name="bench-floor",
            entrypoint="benchmarks/reorganisation.py:bare_floor",
            work_pool_name=pool,
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
            ],
        )

    try:
        deployment_id = asyncio.run(_with_client(api, register))
        took: list[float] = []
        for _ in range(rounds):
            run = post_retrying(f"{api}/deployments/{deployment_id}/create_flow_run").json()
            wait_state(api, run["id"], {"PAUSED"})
            sent: list[float] = []
            resumed = post_retrying(f"{api}/flow_runs/{run['id']}/resume", sent=sent)
            posted = sent[-1]  # the POST that was answered
            if resumed.json().get("status") != "ACCEPT":
                raise RuntimeError(f"the floor's resume was refused: {resumed.text[:200]}")
            done = wait_state(api, run["id"], {"COMPLETED", "FAILED", "CRASHED"})
            if done["state"]["type"] != "COMPLETED":
                raise RuntimeError(f"the floor's run ended {done['state']['type']}")
            took.append(stamp(done["end_time"]) - posted)
        return took
    finally:
        if worker is not None:
            from offboarding.wiring.processes import stop_process_group

            stop_process_group(worker)  # type: ignore[arg-type]


async def _with_client(api: str, call: Callable[[Any], Any]) -> Any:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api) as client:
        return await call(client)


def wait_state(api: str, run_id: str, states: set[str], timeout: float = 600) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
        if run["state"]["type"] in states:
            return run  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise RuntimeError(f"flow run {run_id} did not reach {states} within {timeout:.0f} s")


def run_states(api: str, run_ids: list[str]) -> dict[str, str]:
    """The state type of each of these flow runs, in one request per 200 runs."""
    import httpx

    found: dict[str, str] = {}
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(run_ids), 200):
            runs = client.post(
                f"{api}/flow_runs/filter",
                json={"flow_runs": {"id": {"any_": run_ids[start : start + 200]}}, "limit": 200},
            ).json()
            found.update({run["id"]: run["state"]["type"] for run in runs if run.get("state")})
    return found


# -- the benchmark ------------------------------------------------------------------------------


def verified_at(engine: Any, case_id: str) -> float | None:
    """When the flow recorded every grant verified gone (its `verification` audit event)."""
    from offboarding.domain.audit import events_for_case

    times = [stamp(e.at) for e in events_for_case(engine, case_id) if e.action == "verification"]
    return max(times) if times else None


def one_size(
    n: int,
    args: argparse.Namespace,
    home: Path,
    database_url: str | None,
    prefect_url: str | None,
    sampler: RssSampler,
) -> None:
    from demo.directory import LocalDirectory
    from demo.organisation import seed_demo_org
    from demo.scim_app import bearer_token_app, serve
    from offboarding.domain.cases import get_case
    from offboarding.domain.models import CaseStatus
    from offboarding.intake.client import termination_event
    from offboarding.wiring.db import make_engine
    from offboarding.wiring.processes import free_port
    from offboarding.wiring.service import run_service
    from offboarding.wiring.settings import Settings

    production = args.database == "postgresql"
    password = "Bench-" + secrets.token_urlsafe(8)
    token = secrets.token_urlsafe(24)
    app = SlowThrottledApp(bearer_token_app(token), latency=0.0, rate=1e9)
    scim = serve(app)  # type: ignore[arg-type]
    try:
        with LocalDirectory.start(home / "slapd", admin_password=secrets.token_urlsafe(16)) as d:
            org = seed_demo_org(d, password=password)
            leavers = add_leavers(d, org, n, password)
            seed_scim(scim.base_url, token, leavers)
            app.latency, app.rate = args.scim_latency, args.scim_rate
            settings = Settings(
                home=home / "home",
                database_url=database_url,
                prefect_database_url=prefect_url,
                workers=args.workers,
                work_pool_concurrency=args.concurrency,
                web_processes=args.web_processes,
                port=free_port(),
                prefect_port=free_port(),
                hris_secret=secrets.token_urlsafe(24),  # type: ignore[arg-type]
                signing_key=secrets.token_urlsafe(24),  # type: ignore[arg-type]
                policy={"required_approvals": args.approvals},  # type: ignore[arg-type]
                connectors=[
                    d.connector_config(managers_group=org.managers_group_dn),
                    {
                        "name": "apex",
                        "kind": "scim",
                        "base_url": scim.base_url,
                        "token": token,
                        "max_requests_per_second": args.scim_pace,
                    },
                ],
            )
            started = time.perf_counter()
            with run_service(settings, quiet=True, production=production) as running:
                mode = (
                    f"production: PostgreSQL, work pool {running.work_pool!r}, "
                    f"{args.workers} worker(s), at most {args.concurrency} runs at once"
                    if production
                    else "embedded: SQLite, one runner"
                )
                print(f"\nN={n}: service up in {time.perf_counter() - started:.1f} s ({mode})")
                sampler.reset()
                outbox = Outbox(settings.outbox_dir)
                events = [
                    termination_event(
                        employee_id=leaver.employee_id,
                        email=leaver.email,
                        display_name=leaver.name,
                        requested_by=org.requester_id,
                    )
                    for leaver in leavers
                ]
                wall = time.perf_counter()
                released = release_events(
                    running.web_url, settings.hris_secret.get_secret_value(), events
                )
                with ThreadPoolExecutor(n) as pool:
                    timings = list(
                        pool.map(
                            lambda timing: one_leaver(
                                running, settings, outbox, timing, args.approvals
                            ),
                            released,
                        )
                    )
                engine = make_engine(settings.resolved_database_url)
                deadline = time.monotonic() + args.deadline
                open_runs = {t.run_id: t for t in timings}
                while open_runs and time.monotonic() < deadline:
                    for run_id, state in run_states(running.api_url, list(open_runs)).items():
                        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                            open_runs.pop(run_id).state = state
                    time.sleep(0.5)
                wall_s = time.perf_counter() - wall
                for timing in timings:
                    timing.verified_at = verified_at(engine, timing.case_id) or float("nan")
                statuses = [get_case(engine, t.case_id) for t in timings]
                completed = sum(
                    1 for c in statuses if c is not None and c.status == CaseStatus.COMPLETED
                )
                engine.dispose()
                sampler.sample()
                peaks = dict(sampler.peaks), dict(sampler.totals), dict(sampler.counts)
                cpu = sampler.cpu()
                took = floor(running, args.floor_rounds)  # same server, after the leavers
            left = {
                leaver.employee_id: ldap_still_has(d, leaver, password)
                + scim_still_has(scim.base_url, token, leaver)
                for leaver in leavers
            }
    finally:
        scim.stop()
    report(n, args, timings, wall_s, completed, left, app, peaks, len(open_runs), took, cpu)


def report(
    n: int,
    args: argparse.Namespace,
    timings: list[Timing],
    wall_s: float,
    completed: int,
    left: dict[str, list[str]],
    scim: SlowThrottledApp,
    peaks: tuple[dict[str, float], dict[str, float], dict[str, int]],
    unfinished: int,
    took: list[float],
    cpu: dict[str, float],
) -> None:
    intake = [t.intake_ms for t in timings]
    to_verified = [t.verified_at - t.approved_at for t in timings if not math.isnan(t.verified_at)]
    states: dict[str, int] = {}
    for t in timings:
        states[t.state or "unfinished"] = states.get(t.state or "unfinished", 0) + 1
    print(
        f"N={n}: wall {wall_s:.1f} s (first event released → last run ended), "
        f"per leaver {wall_s / n:.2f} s"
    )
    print(
        f"  runs: {', '.join(f'{k} x{v}' for k, v in sorted(states.items()))}; "
        f"cases completed {completed}/{n}; unfinished at the deadline {unfinished}"
    )
    print(
        f"  intake (event → 202): p50 {percentile(intake, 50):.0f} ms, "
        f"p99 {percentile(intake, 99):.0f} ms"
    )
    if to_verified:
        print(
            f"  approval POST → every grant verified gone: "
            f"p50 {percentile(to_verified, 50):.2f} s, "
            f"p99 {percentile(to_verified, 99):.2f} s ({len(to_verified)}/{n} verified)"
        )
    still = {k: v for k, v in left.items() if v}
    print(
        f"  at the peers: {n - len(still)}/{n} leavers with nothing left in slapd and SCIM"
        + (f"; left: {dict(list(still.items())[:3])}" if still else "")
    )
    print(
        f"  SCIM app ({args.scim_latency * 1000:.0f} ms latency, 429 above "
        f"{args.scim_rate:.0f} req/s): {scim.requests} requests, {scim.throttled} answered 429, "
        f"{scim.too_early} sent again before their Retry-After"
        + (f" ({'; '.join(scim.early[:3])})" if scim.early else "")
    )
    largest, totals, counts = peaks
    for kind in sorted(largest):
        print(
            f"  peak RSS {kind}: {largest[kind]:.0f} MiB per process, "
            f"{totals[kind]:.0f} MiB all together (PSS), at most {counts[kind]} at once"
        )
    print(
        "  CPU seconds per kind of process, leavers only (the service shares its process "
        "with this benchmark's clients): "
        + ", ".join(f"{kind} {used:.1f}" for kind, used in sorted(cpu.items(), key=lambda c: -c[1]))
        + f"; all together {sum(cpu.values()):.1f} ({sum(cpu.values()) / n:.2f} per leaver)"
    )
    floor_median = statistics.median(took)
    print(
        f"  floor (bare flow suspended, resumed on the same server; resume POST → Completed), "
        f"median of {len(took)}: {floor_median:.2f} s "
        f"(min {min(took):.2f}, max {max(took):.2f})"
    )
    if to_verified:
        ratio = percentile(to_verified, 50) / floor_median
        print(f"  ratio approval→verified p50 / floor median: {ratio:.2f}x")


def run(args: argparse.Namespace) -> None:
    sampler = RssSampler()
    threading.Thread(target=sampler.run, name="rss", daemon=True).start()
    for n in args.leavers:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            database_url = prefect_url = None
            if args.database == "postgresql":
                database_url = stack.enter_context(postgres_database())
                prefect_url = stack.enter_context(postgres_database())
            one_size(n, args, Path(tmp), database_url, prefect_url, sampler)


def main() -> None:
    import logging

    from offboarding.wiring.logging import configure_logging

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leavers", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--web-processes", type=int, default=1, help="the web_processes setting")
    parser.add_argument("--approvals", type=int, choices=[1, 2], default=1)
    parser.add_argument("--floor-rounds", type=int, default=5)
    parser.add_argument("--scim-latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument("--scim-rate", type=float, default=20.0, help="requests/s before 429")
    parser.add_argument(
        "--scim-pace",
        type=float,
        default=15.0,
        help="the SCIM connector's max_requests_per_second (below --scim-rate, as an "
        "administrator sets it from the vendor's documented limit)",
    )
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds per N")
    args = parser.parse_args()
    configure_logging(level=logging.WARNING)
    run(args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
