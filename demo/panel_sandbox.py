"""A hosting-panel sandbox: stateful fakes of Plesk and DirectAdmin, labelled "sandbox".

Both are ASGI apps (Starlette) over in-memory state, seeded with the demo leaver Jan de
Vries (E1042, jdevries@example.test): a mailbox with mail in it, a forward to a private
address, an FTP account and a panel user (Plesk) / login key (DirectAdmin), next to
colleagues' accounts that must stay. Tests use them in-process through `SyncAsgiTransport`;
`offboarding demo` serves them over HTTP on 127.0.0.1 (uvicorn, in a thread).

Plesk, following Plesk's documentation ("About REST API", REST API v2 OpenAPI; extensions
guide "Command-Line Interface" for the {code, stdout, stderr} result; CLI reference for
`mail`, `ftpsubaccount` ("creating/deleting additional FTP accounts, changing login
credentials and home directory") and `user`):
- `X-API-Key`; a wrong or missing key is 401 `{"code": ..., "message": ...}`; unknown
  paths 404 in the same shape;
- `GET /api/v2/server`, `/api/v2/domains`, `/api/v2/clients`, `/api/v2/cli/commands`;
- `POST /api/v2/cli/{command}/call` `{"params": [...]}` -> 200 `{"code", "stdout",
  "stderr"}`; a failing utility has `code` 1 and says why on stderr.
Plesk documents no rate limit: the 429/503 with Retry-After (`throttle_once`) is what a
proxy in front of it answers, which the connector honours all the same.

DirectAdmin, following its Legacy API documentation (directadmin.com/api.html: CMD_API_POP
list/create/delete, "Success Returns error=0 ... Failure Returns error=1 and url encoded
String"), "All about API" (JSON POST bodies, login keys limited to CMD_API_* commands),
and the fields clients read (omines/directadmin: `full_list` with `suspended`, forwarders
`name=dest,dest`, `select0` for deletes):
- HTTP basic `user:loginkey`; a wrong key is 401 with `error=1&text=...`; a command the
  key does not allow is HTTP 200 `error=1&text=Cannot Execute Your Request&details=...`;
- every failure is HTTP 200 with `error=1&text=...&details=...` (JSON with `json=yes`).
DirectAdmin documents no 429 either; `throttle` works as for Plesk.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from demo.organisation import email_of

LABEL = "sandbox"
DOMAIN = "example.test"
LEAVER, COLLEAGUE, MANAGER = "jdevries", "bmulder", "lsmit"
PRIVATE = "jan.devries@private.example"


class SyncAsgiTransport(httpx.BaseTransport):
    """httpx's ASGI transport for a synchronous `httpx.Client`: one event loop per request."""

    def __init__(self, app: Any) -> None:
        self._inner = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            answer = await self._inner.handle_async_request(request)
            content = await answer.aread()
            return httpx.Response(answer.status_code, headers=answer.headers, content=content)

        return asyncio.run(send())


@dataclass
class Throttle:
    """Answers the next requests with 429 (or 503) and Retry-After, as a proxy would."""

    pending: list[tuple[int, int]] = field(default_factory=list)

    def once(self, seconds: int, status: int = 429) -> None:
        self.pending.append((status, seconds))

    def answer(self, body: Response) -> Response | None:
        if not self.pending:
            return None
        status, seconds = self.pending.pop(0)
        body.status_code = status
        body.headers["Retry-After"] = str(seconds)
        return body


# -- Plesk -------------------------------------------------------------------------------


@dataclass
class PleskMail:
    mailbox: bool
    password: str
    messages: int
    forwarding: bool = False
    forwards: list[str] = field(default_factory=list)


@dataclass
class PleskState:
    api_key: str
    domains: list[str] = field(default_factory=lambda: [DOMAIN])
    mail: dict[str, PleskMail] = field(default_factory=dict)  # address -> mail name
    ftp: dict[str, dict[str, str]] = field(default_factory=dict)  # login -> domain, home, pw
    users: dict[str, dict[str, str]] = field(default_factory=dict)  # login -> status, pw, email
    throttle: Throttle = field(default_factory=Throttle)
    calls: list[list[str]] = field(default_factory=list)  # CLI params as received

    def snapshot(self) -> Any:
        return json.loads(json.dumps([self.mail, self.ftp, self.users], default=vars))


def _options(params: list[str]) -> dict[str, str]:
    return {params[i]: params[i + 1] for i in range(0, len(params) - 1, 2)}


def plesk_cli(state: PleskState, command: str, params: list[str]) -> tuple[int, str, str]:
    """What `plesk bin <command> <params>` does to the state: (exit code, stdout, stderr)."""
    if len(params) < 2:
        return 1, "", f"{command}: a command and an object name are required"
    verb, name, options = params[0], params[1].lower(), _options(params[2:])
    if command == "mail":
        box = state.mail.get(name)
        if box is None:
            return 1, "", f"Unable to find mail name {name}: mail name does not exist"
        if verb == "--info":
            lines = [f"Mailname: {name.partition('@')[0]}", f"Domain: {name.partition('@')[2]}",
                     f"Mailbox: {str(box.mailbox).lower()}",
                     f"Forwarding: {str(box.forwarding).lower()}",
                     f"Forwarding address(es): {', '.join(box.forwards)}"]  # fmt: skip
            return 0, "\n".join(lines) + "\n", ""
        if verb == "--remove":
            del state.mail[name]
            return 0, "SUCCESS: Removal of mail name completed\n", ""
        if verb != "--update":
            return 1, "", f"Unknown command {verb}"
        for option, value in options.items():
            if option == "-mailbox":
                box.mailbox = value == "true"  # the messages stay where they are
            elif option == "-passwd":
                box.password = value
            elif option == "-forwarding":
                box.forwarding = value == "true"
            elif option == "-forwarding-addresses":
                how, _, addresses = value.partition(":")
                for address in (a.strip().lower() for a in addresses.split(",") if a.strip()):
                    if how == "add" and address not in box.forwards:
                        box.forwards.append(address)
                    elif how == "del" and address in box.forwards:
                        box.forwards.remove(address)
            else:
                return 1, "", f"Unknown option {option}"
        return 0, f"SUCCESS: Update of mail name {name} completed\n", ""
    table = state.ftp if command == "ftpsubaccount" else state.users
    if command not in ("ftpsubaccount", "user"):
        return 1, "", f"Unknown utility {command}"
    item = table.get(name)
    if item is None:
        return 1, "", f"{'FTP account' if table is state.ftp else 'User'} {name} does not exist"
    if verb == "--info":
        shown = {k: v for k, v in item.items() if k != "password"}
        return 0, "".join(f"{k.capitalize()}: {v}\n" for k, v in shown.items()), ""
    if verb == "--remove":
        del table[name]
        return 0, "SUCCESS: removed\n", ""
    if verb == "--update":
        allowed = {"-passwd": "password", "-status": "status", "-home": "home"}
        if not set(options) <= set(allowed):
            return 1, "", f"Unknown option {sorted(set(options) - set(allowed))[0]}"
        item.update({allowed[k]: v for k, v in options.items()})
        return 0, "SUCCESS: updated\n", ""
    return 1, "", f"Unknown command {verb}"


def plesk_app(state: PleskState) -> Starlette:
    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"code": status, "message": message}, status_code=status)

    async def handle(request: Request) -> Response:
        if (throttled := state.throttle.answer(error(429, "Too many requests"))) is not None:
            return throttled
        if request.headers.get("X-API-Key") != state.api_key:
            return error(401, "Authentication failed: the API key is missing or not valid")
        path = request.url.path.removeprefix("/api/v2/")
        if request.method == "GET":
            answers: dict[str, Any] = {
                "server": {"hostname": "plesk.sandbox", "panel_version": "18.0.sandbox"},
                "domains": [{"id": i + 1, "name": d} for i, d in enumerate(state.domains)],
                "clients": [{"id": 1, "login": "examplecorp", "name": "Example Corp"}],
                "cli/commands": ["mail", "ftpsubaccount", "user", "domain", "subscription"],
            }
            if path in answers:
                return JSONResponse(answers[path])
        command = path.removeprefix("cli/").removesuffix("/call")
        if request.method == "POST" and path == f"cli/{command}/call":
            params = [str(p) for p in (await request.json()).get("params", [])]
            state.calls.append(params)
            code, stdout, stderr = plesk_cli(state, command, params)
            return JSONResponse({"code": code, "stdout": stdout, "stderr": stderr})
        return error(404, f"No route for {request.method} {request.url.path}")

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", handle, methods=methods)])


# -- DirectAdmin ---------------------------------------------------------------------------


@dataclass
class DaState:
    username: str
    login_key: str
    allowed: set[str]
    domains: list[str] = field(default_factory=lambda: [DOMAIN])
    pop: dict[str, dict[str, str]] = field(default_factory=dict)  # user@domain -> fields
    forwarders: dict[str, list[str]] = field(default_factory=dict)  # name@domain -> dests
    ftp: dict[str, dict[str, str]] = field(default_factory=dict)  # name@domain -> path, pw
    login_keys: dict[str, dict[str, str]] = field(default_factory=dict)
    throttle: Throttle = field(default_factory=Throttle)
    fail_next: dict[str, tuple[str, str]] = field(default_factory=dict)  # command -> error

    def snapshot(self) -> Any:
        return json.loads(json.dumps([self.pop, self.forwarders, self.ftp, self.login_keys]))


class DaFailure(Exception):
    def __init__(self, text: str, details: str = "") -> None:
        self.text, self.details = text, details


def _selected(form: dict[str, str]) -> list[str]:
    return [v for k, v in sorted(form.items()) if k.startswith("select")]


def da_command(state: DaState, command: str, form: dict[str, str]) -> list[tuple[str, str]]:
    """What one CMD_API_* command does to the state; DaFailure for error=1."""
    action, domain = form.get("action", "list"), form.get("domain", "")
    if command == "CMD_API_SHOW_DOMAINS":
        return [("list[]", d) for d in state.domains]
    if command != "CMD_API_LOGIN_KEYS" and domain not in state.domains:
        raise DaFailure("Cannot Execute Your Request", f"You do not own the domain {domain}")
    at = f"@{domain}"
    if command == "CMD_API_POP":
        users = {a.removesuffix(at): v for a, v in state.pop.items() if a.endswith(at)}
        if action == "list":
            return [("list[]", u) for u in sorted(users)]
        if action == "full_list":
            return [(u, urlencode({k: x for k, x in v.items() if k != "password"}))
                    for u, v in sorted(users.items())]  # fmt: skip
        if action not in ("modify", "suspend", "unsuspend", "delete"):
            raise DaFailure("Unknown action", action)
        targets = _selected(form) if action in ("suspend", "unsuspend") else [form.get("user", "")]
        for user in targets:
            if user not in users:
                raise DaFailure("Unable to modify email account", f"{user}{at} does not exist")
        for user in targets:
            if action == "modify":
                if not form.get("passwd") or form.get("passwd") != form.get("passwd2"):
                    raise DaFailure("Passwords do not match", "passwd and passwd2 differ")
                users[user]["password"] = form["passwd"]
            elif action in ("suspend", "unsuspend"):
                users[user]["suspended"] = "yes" if action == "suspend" else "no"
            else:
                del state.pop[user + at]
        return [("error", "0"), ("text", "Success"), ("details", f"{action} done")]
    if command == "CMD_API_EMAIL_FORWARDERS":
        if action == "list":
            mine = {a.removesuffix(at): d for a, d in state.forwarders.items() if a.endswith(at)}
            return [(n, ",".join(d)) for n, d in sorted(mine.items())]
        if action in ("create", "modify"):
            key, exists = form.get("user", "") + at, form.get("user", "") + at in state.forwarders
            if exists != (action == "modify"):
                raise DaFailure(f"Unable to {action} forwarder", f"{key}: exists={exists}")
            state.forwarders[key] = [d.strip() for d in form.get("email", "").split(",")]
        elif action == "delete":
            for name in _selected(form):
                if state.forwarders.pop(name + at, None) is None:
                    raise DaFailure("Unable to delete forwarder", f"{name}{at} does not exist")
        else:
            raise DaFailure("Unknown action", action)
        return [("error", "0"), ("text", "Success"), ("details", f"forwarder {action} done")]
    table = state.ftp if command == "CMD_API_FTP" else state.login_keys
    suffix = at if command == "CMD_API_FTP" else ""
    if action == "list":
        return [(n, urlencode({k: v for k, v in i.items() if k not in ("password", "key")}))
                for n, i in sorted(table.items()) if n.endswith(suffix)]  # fmt: skip
    if action == "delete":
        for name in _selected(form):
            if table.pop(name + suffix, None) is None:
                raise DaFailure("Unable to delete", f"{name}{suffix} does not exist")
        return [("error", "0"), ("text", "Success"), ("details", "deleted")]
    raise DaFailure("Unknown action", action)


def directadmin_app(state: DaState) -> Starlette:
    def answer(request: Request, pairs: list[tuple[str, str]], status: int = 200) -> Response:
        if request.query_params.get("json") == "yes":
            return JSONResponse(dict(pairs), status_code=status)
        return PlainTextResponse(urlencode(pairs), status_code=status)

    def refused(request: Request, text: str, details: str, status: int = 200) -> Response:
        return answer(request, [("error", "1"), ("text", text), ("details", details)], status)

    async def handle(request: Request) -> Response:
        if (throttled := state.throttle.answer(PlainTextResponse("error=1&text=Busy"))) is not None:
            return throttled
        wanted = base64.b64encode(f"{state.username}:{state.login_key}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {wanted}":
            return refused(request, "Unauthorized", "Invalid login. Please verify your "
                           "Username and Password", status=401)  # fmt: skip
        command = request.url.path.strip("/")
        if not command.startswith("CMD_API_"):
            return PlainTextResponse("<html><body>Login page</body></html>")
        if command not in state.allowed:
            return refused(request, "Cannot Execute Your Request",
                           f"The login key is not allowed to run {command}")  # fmt: skip
        form = {k: v for k, v in request.query_params.items() if k != "json"}
        if request.method == "POST":
            raw = await request.body()
            if request.headers.get("Content-Type", "").startswith("application/json"):
                form.update({k: str(v) for k, v in json.loads(raw or b"{}").items()})
            else:
                form.update(dict(parse_qsl(raw.decode())))
        if request.method == "POST" and command in state.fail_next:
            return refused(request, *state.fail_next.pop(command))
        try:
            return answer(request, da_command(state, command, form))
        except DaFailure as failure:
            return refused(request, failure.text, failure.details)

    return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])


# -- seeding, serving, and the connector configs -------------------------------------------


def seed_plesk(state: PleskState) -> None:
    leaver, colleague = email_of(LEAVER), email_of(COLLEAGUE)
    state.mail[leaver] = PleskMail(True, "Jan-old-1", 1342, True, [PRIVATE])
    state.mail[colleague] = PleskMail(True, "Bram-old-2", 310)
    state.ftp[LEAVER] = {"domain": DOMAIN, "home": "/httpdocs", "password": "ftp-old-3"}
    state.ftp["deploy"] = {"domain": DOMAIN, "home": "/httpdocs/releases", "password": "d-4"}
    state.users[LEAVER] = {"status": "enabled", "email": leaver, "password": "panel-old-5"}
    state.users[COLLEAGUE] = {"status": "enabled", "email": colleague, "password": "p-6"}


def seed_directadmin(state: DaState) -> None:
    leaver, colleague = email_of(LEAVER), email_of(COLLEAGUE)
    for address, messages in ((leaver, "877"), (colleague, "120")):
        state.pop[address] = {"quota": "0", "usage": "41.2", "messages": messages,
                              "suspended": "no", "password": f"old-{messages}"}  # fmt: skip
    state.forwarders[leaver] = [PRIVATE]
    state.forwarders[f"sales@{DOMAIN}"] = [leaver, colleague]
    state.ftp[leaver] = {"path": f"/home/examplecorp/domains/{DOMAIN}/public_html"}
    state.ftp[f"backup@{DOMAIN}"] = {"path": "/home/examplecorp/backups"}
    for key in (f"{LEAVER}-deploy", f"{COLLEAGUE}-ci", "offboarding"):
        state.login_keys[key] = {"created": "1700000000", "expires": "never"}


@dataclass
class SandboxPanel:
    """One sandboxed panel: its base URL, its secret and how tests reach it in-process."""

    name: str
    kind: str
    base_url: str
    secret: str = field(repr=False)
    settings: dict[str, Any]
    transport: httpx.BaseTransport | None = None
    label: str = LABEL

    def connector_config(self, **overrides: Any) -> dict[str, Any]:
        secret_field = "api_key" if self.kind == "plesk" else "login_key"
        config = {"name": self.name, "kind": self.kind, "base_url": self.base_url,
                  secret_field: self.secret, **self.settings}  # fmt: skip
        return {**config, **overrides}


@dataclass
class PanelSandbox:
    plesk: SandboxPanel
    directadmin: SandboxPanel
    plesk_state: PleskState
    da_state: DaState


def _settings() -> dict[str, Any]:
    return {"mail_domains": [DOMAIN], "mailbox_forward_to": email_of(MANAGER)}


def build_sandbox(*, plesk_key: str, da_key: str) -> tuple[PleskState, DaState]:
    plesk = PleskState(api_key=plesk_key)
    seed_plesk(plesk)
    allowed = {"CMD_API_SHOW_DOMAINS", "CMD_API_POP", "CMD_API_EMAIL_FORWARDERS",
               "CMD_API_FTP", "CMD_API_LOGIN_KEYS"}  # fmt: skip
    da = DaState(username="examplecorp", login_key=da_key, allowed=allowed)
    seed_directadmin(da)
    return plesk, da


@contextmanager
def _served(app: Starlette) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        raise RuntimeError("the hosting-panel sandbox did not start within 10 s")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def running_panel_sandbox(
    *, plesk_key: str, da_key: str, serve_http: bool = True
) -> Iterator[PanelSandbox]:
    """Both fakes, seeded; over HTTP on 127.0.0.1 (demo) or in-process (tests)."""
    plesk_state, da_state = build_sandbox(plesk_key=plesk_key, da_key=da_key)
    apps = (plesk_app(plesk_state), directadmin_app(da_state))
    if serve_http:
        with _served(apps[0]) as plesk_url, _served(apps[1]) as da_url:
            yield _sandbox(plesk_state, da_state, (plesk_url, da_url), (None, None))
        return
    transports = (SyncAsgiTransport(apps[0]), SyncAsgiTransport(apps[1]))
    urls = ("http://127.0.0.1:8443", "http://127.0.0.1:2222")
    yield _sandbox(plesk_state, da_state, urls, transports)


def _sandbox(
    plesk_state: PleskState,
    da_state: DaState,
    urls: tuple[str, str],
    transports: tuple[httpx.BaseTransport | None, httpx.BaseTransport | None],
) -> PanelSandbox:
    plesk = SandboxPanel(f"Webhosting (Plesk {LABEL})", "plesk", urls[0], plesk_state.api_key,
                         _settings(), transports[0])  # fmt: skip
    da_settings = {**_settings(), "username": da_state.username,
                   "own_login_key_name": "offboarding"}  # fmt: skip
    directadmin = SandboxPanel(f"Webhosting (DirectAdmin {LABEL})", "directadmin", urls[1],
                               da_state.login_key, da_settings, transports[1])  # fmt: skip
    return PanelSandbox(plesk, directadmin, plesk_state, da_state)
