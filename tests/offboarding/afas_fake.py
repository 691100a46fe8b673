"""A stateful fake of AFAS Profit's REST API (GetConnectors), served on 127.0.0.1 by uvicorn.

No Profit environment can run here, so this fake reproduces what AFAS documents
(AFASSoftware/OASContent: `markdownpages/profit/en/get-connector.md`, `authentication.md`,
`troubleshooting.md`, and the responses in `OpenApiSpecs/profit/en/*.json`):

- `GET /ProfitRestServices/connectors/<id>` with `Authorization: AfasToken <base64 of
  "<token><version>1</version><data>…</data></token>">`; anything else is 401 with an empty
  body ("the token is not valid or not correctly applied"); the environment's IP
  restriction is 403, also without a body;
- a GetConnector the app connector does not hold is 500 with `{"externalMessage":
  "GetConnector not supported for this app or the user is not authorized", "errorNumber",
  "profitLogReference"}`; a filter on a field the connector does not return is 500
  "Connector field '<id>' not found"; a skip/take combination such as `skip=2&take=-1` is
  500 "An unexpected error has occurred." (errorNumber -2147180999);
- filters: `filterfieldids`, `filtervalues`, `operatortypes` (1 is equal, 7 not equal; a
  comma between filters is AND, a semicolon OR), the same number of each; `skip`/`take`
  default 0/100, -1/-1 is all; a query string longer than 2049 characters is 404;
- the answer is `{"skip", "take", "rows"}`; every row carries every field of the connector
  (null when empty); dates as `YYYY-MM-DDT00:00:00Z`;
- maintenance is 503 `{"error": {"code": "503", "message": …}, "retry_after": 7200}`.

State: dossier items (number, type, employee, date and reason out of service, instant
dismissal) and GetConnector definitions over them (the fields they return and their built-in
filter on dossier item type), like the one the HR administrator publishes for offboarding.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BASE_PATH = "/ProfitRestServices"
NOT_SUPPORTED = "GetConnector not supported for this app or the user is not authorized"
UNEXPECTED = "An unexpected error has occurred."
MAINTENANCE = (
    "Service temporarily unavailable due to scheduled maintenance. Please check "
    "afasstatus.nl for details."
)
TOKEN_XML = re.compile(r"^<token><version>1</version><data>([^<]*)</data></token>$")


@dataclass
class DossierItem:
    subject_id: int
    type_id: int  # dossier item type (e.g. "Uit dienst" or "Verlof")
    employee_id: str | None
    end_date: date | None = None  # "Datum uit dienst"
    reason: str | None = None  # "Reden uit dienst"
    instant_dismissal: bool = False

    def field(self, name: str) -> Any:
        values: dict[str, Any] = {
            "SubjectId": self.subject_id,
            "TypeId": self.type_id,
            "EmployeeId": self.employee_id,
            "EmploymentEndDate": (
                f"{self.end_date.isoformat()}T00:00:00Z" if self.end_date else None
            ),
            "ReasonEndEmployment": self.reason,
            "InstantDismissal": self.instant_dismissal,
        }
        return values[name]


@dataclass
class GetConnector:
    """A definition: the fields it returns and its built-in filter on dossier item type."""

    fields: list[str]
    type_ids: set[int]


DEFAULT_FIELDS = [
    "SubjectId",
    "TypeId",
    "EmployeeId",
    "EmploymentEndDate",
    "ReasonEndEmployment",
    "InstantDismissal",
]


@dataclass(frozen=True)
class Seen:
    path: str
    query: str
    status: int


class Refused(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def profit_error(message: str, number: int = -2147180999) -> Refused:
    return Refused(
        500,
        {
            "externalMessage": message,
            "errorNumber": number,
            "profitLogReference": secrets.token_hex(16).upper(),
        },
    )


@dataclass
class FakeAfas:
    """The environment's state, the tokens its app connector accepts, and what it has seen."""

    tokens: set[str] = field(default_factory=set)  # the <data> of each valid token
    app_connectors: dict[str, GetConnector] = field(default_factory=dict)
    items: dict[int, DossierItem] = field(default_factory=dict)
    ip_restricted: bool = False
    maintenance: bool = False
    hold: threading.Event | None = None  # while set to an unset Event, answers wait for it
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, name: str, type_ids: set[int], fields: list[str] | None = None) -> None:
        self.app_connectors[name] = GetConnector(list(fields or DEFAULT_FIELDS), set(type_ids))

    def add_item(self, item: DossierItem) -> DossierItem:
        with self.lock:
            self.items[item.subject_id] = item
        return item

    def lookups(self, subject_id: int) -> int:
        """How many GetConnector requests asked for this dossier item."""
        with self.lock:
            return sum(1 for s in self.seen if f"filtervalues={subject_id}" in s.query)

    def app(self) -> Starlette:
        return Starlette(routes=[Route(BASE_PATH + "/{path:path}", self.handle)])

    async def handle(self, request: Request) -> Response:
        hold = self.hold
        if hold is not None:
            await anyio.to_thread.run_sync(hold.wait, 10)
        with self.lock:
            try:
                status, body = 200, self._answer(request)
                headers: dict[str, str] = {}
            except Refused as refused:
                status, body, headers = refused.status, refused.body, refused.headers
            self.seen.append(Seen(request.url.path, request.url.query, status))
        content = b"" if body is None else json.dumps(body).encode()
        return Response(content, status, headers, media_type="application/json")

    def _answer(self, request: Request) -> Any:
        if self.maintenance:
            raise Refused(
                503,
                {"error": {"code": "503", "message": MAINTENANCE}, "retry_after": 7200},
                {"Retry-After": "7200"},
            )
        self._authenticate(request.headers.get("authorization", ""))
        if self.ip_restricted:
            raise Refused(403)
        if len(request.url.query) + 1 > 2049:
            raise Refused(404)
        path = request.url.path.removeprefix(BASE_PATH + "/")
        kind, _, name = path.partition("/")
        if kind != "connectors" or not name or "/" in name:
            raise Refused(404)
        connector = self.app_connectors.get(name)
        if connector is None:
            raise profit_error(NOT_SUPPORTED, -2147024891)
        query = request.query_params
        wanted = _filter(connector, query)
        rows = [
            {f: item.field(f) for f in connector.fields}
            for item in sorted(self.items.values(), key=lambda i: i.subject_id)
            if item.type_id in connector.type_ids
        ]
        rows = [r for r in rows if wanted(r)]
        skip, take = _int(query.get("skip", "0")), _int(query.get("take", "100"))
        if (skip, take) == (-1, -1):
            return {"skip": -1, "take": -1, "rows": rows}
        if skip < 0 or take < 0:
            raise profit_error(UNEXPECTED)
        return {"skip": skip, "take": take, "rows": rows[skip : skip + take]}

    def _authenticate(self, header: str) -> None:
        scheme, _, value = header.partition(" ")
        if scheme != "AfasToken":
            raise Refused(401)
        try:
            xml = base64.b64decode(value.strip(), validate=True).decode()
        except ValueError as exc:
            raise Refused(401) from exc
        found = TOKEN_XML.match(xml)
        if found is None or found.group(1) not in self.tokens:
            raise Refused(401)


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise profit_error(UNEXPECTED) from exc


OPERATORS: dict[str, Callable[[Any, str], bool]] = {
    "1": lambda value, wanted: value is not None and _text(value) == wanted,
    "7": lambda value, wanted: value is None or _text(value) != wanted,
}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _filter(connector: GetConnector, query: Any) -> Callable[[dict[str, Any]], bool]:
    """Profit's URL filter: `,` separates AND-ed conditions, `;` OR-ed groups of them; it is
    checked whole before any row is read."""
    names = query.get("filterfieldids")
    if names is None:
        return lambda row: True
    parts = [names, query.get("filtervalues", ""), query.get("operatortypes", "")]
    groups: list[list[tuple[str, str, str]]] = []
    split = [p.split(";") for p in parts]
    if len({len(g) for g in split}) != 1:
        raise profit_error(UNEXPECTED)
    for group_names, group_values, group_operators in zip(*split, strict=True):
        columns = [group_names.split(","), group_values.split(","), group_operators.split(",")]
        if len({len(c) for c in columns}) != 1:
            raise profit_error(UNEXPECTED)
        group = list(zip(*columns, strict=True))
        for name, _, operator in group:
            if name not in connector.fields:
                raise profit_error(f"Connector field '{name}' not found")
            if operator not in OPERATORS:
                raise profit_error(UNEXPECTED)
        groups.append(group)
    return lambda row: any(
        all(OPERATORS[op](row[name], wanted) for name, wanted, op in group) for group in groups
    )


@dataclass
class RunningAfas:
    fake: FakeAfas
    base_url: str  # https://<environment>.rest.afas.online/ProfitRestServices, here

    @property
    def host(self) -> str:
        return self.base_url.split("/")[2].split(":")[0]


@contextmanager
def serving(fake: FakeAfas) -> Iterator[RunningAfas]:
    """Serve the fake on a free loopback port until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake AFAS did not start within 10 s")
        time.sleep(0.005)
    try:
        yield RunningAfas(fake, f"http://127.0.0.1:{port}{BASE_PATH}")
    finally:
        if fake.hold is not None:
            fake.hold.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
