"""Management hears about a case that needs attention from a Prefect automation: a run of
this installation's offboard deployment that fails posts, through Prefect's own notification
block, to the attention webhook (here a real HTTP server); a completed case posts nothing."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Stack, start_stack
from pydantic import SecretStr
from support import decide, link_in, prefect, run_of, send_leaver, text_of, wait_for_state

from offboarding.orchestration.automations import (
    AttentionAutomationUnavailable,
    AttentionWebhookError,
    automation_name,
    ensure_attention_automation,
)
from offboarding.wiring.processes import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fragile_stack(tmp_path_factory, smtp_server, new_postgres_database) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    """A directory where emptying a group is a permanent error: the demo leaver's case
    stops in needs attention (the legacy-ftp group has no other member)."""
    yield from start_stack(
        tmp_path_factory.mktemp("attention"),
        new_postgres_database(),
        smtp_server,
        connector={"empty_group_placeholder": None, "timeout_seconds": 1},
        retry_delays_seconds=[1.0, 1.0],
    )


# -- the webhook: a real HTTP server that keeps what it was sent -------------------------


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    raw: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    url: str
    posts: list[Post] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, predicate: Callable[[Post], bool], timeout: float = 120) -> Post:
        with self.arrived:
            self.arrived.wait_for(lambda: any(predicate(p) for p in self.posts), timeout)
            found = [p for p in self.posts if predicate(p)]
        assert found, f"no matching POST within {timeout:.0f} s; got {self.posts}"
        return found[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    token = secrets.token_urlsafe(16)
    received = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            with received.arrived:
                received.posts.append(Post(self.path, dict(self.headers), body))
                received.arrived.notify_all()
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/attention?token={token}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


# -- reading back through Prefect's API ---------------------------------------------------


def automations_named(api_url: str, name: str) -> list[dict[str, Any]]:
    response = prefect(
        "POST", f"{api_url}/automations/filter", json={"automations": {"name": {"any_": [name]}}}
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def blocks_named(api_url: str, name: str, *, include_secrets: bool = False) -> list[dict[str, Any]]:
    response = prefect(
        "POST",
        f"{api_url}/block_documents/filter",
        json={
            "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
            "include_secrets": include_secrets,
        },
    )
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def test_ensure_is_idempotent_follows_the_url_and_unsetting_removes_everything(
    fragile_stack: Stack,
) -> None:
    api = fragile_stack.running.api_url
    instance = "elsewhere"  # another installation's names: the stack's own stay untouched
    deployment = f"offboard-leaver/offboard-leaver-{instance}"
    name = automation_name(instance)
    token = secrets.token_urlsafe(16)
    custom = SecretStr(f"https://hooks.example.nl/attention?token={token}")

    # the server this service starts runs what automations need
    services = prefect("GET", f"{api}/admin/settings").json()["server"]["services"]
    assert services["triggers"]["enabled"]  # the triggers and the actions services
    assert services["event_persister"]["enabled"]

    first = ensure_attention_automation(api, deployment, custom, instance=instance)
    again = ensure_attention_automation(api, deployment, custom, instance=instance)
    assert first is not None and first == again
    [automation] = automations_named(api, name)
    assert automation["id"] == first and automation["enabled"]
    trigger = automation["trigger"]
    assert trigger["posture"] == "Reactive" and trigger["threshold"] == 1
    assert set(trigger["expect"]) == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert {
        "prefect.resource.role": "deployment",
        "prefect.resource.name": deployment.split("/")[1],
    } in trigger["match_related"]
    [block] = blocks_named(api, name)
    assert block["block_type"]["slug"] == "custom-webhook"
    [action] = automation["actions"]
    assert action["type"] == "send-notification" and action["block_document_id"] == block["id"]
    # the URL is a secret: neither the automation nor the block (read as the UI reads it) shows it
    assert token not in json.dumps(automation) and token not in json.dumps(block)
    [stored] = blocks_named(api, name, include_secrets=True)
    assert stored["data"]["secrets"]["webhook_url"] == custom.get_secret_value()

    # a Slack URL: the same automation, now with Prefect's Slack block, the old block gone
    slack = SecretStr(f"https://hooks.slack.com/services/T0001/B0001/{token}")
    assert ensure_attention_automation(api, deployment, slack, instance=instance) == first
    [block] = blocks_named(api, name)
    assert block["block_type"]["slug"] == "slack-webhook"
    [automation] = automations_named(api, name)
    assert automation["actions"][0]["block_document_id"] == block["id"]
    assert token not in json.dumps(block)

    # a Teams workflow URL: Prefect's Teams block
    teams = SecretStr(
        "https://prod-01.westeurope.logic.azure.com:443/workflows/0a1b2c/triggers/manual/"
        f"paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={token}"
    )
    assert ensure_attention_automation(api, deployment, teams, instance=instance) == first
    [block] = blocks_named(api, name)
    assert block["block_type"]["slug"] == "ms-teams-webhook"

    # a URL no block can use is refused, naming the setting and the host, never the URL
    with pytest.raises(AttentionWebhookError) as refused:
        ensure_attention_automation(
            api,
            deployment,
            SecretStr(f"https://prod-01.westeurope.logic.azure.com/not-a-workflow?sig={token}"),
            instance=instance,
        )
    assert "attention_webhook_url" in str(refused.value)
    assert "prod-01.westeurope.logic.azure.com" in str(refused.value)
    assert token not in str(refused.value)
    assert [a["id"] for a in automations_named(api, name)] == [first]  # left as it was

    # unset: nothing of it is left in Prefect; unsetting again is harmless
    assert ensure_attention_automation(api, deployment, None, instance=instance) is None
    assert automations_named(api, name) == []
    assert blocks_named(api, name) == []
    assert ensure_attention_automation(api, deployment, None, instance=instance) is None


def test_a_prefect_server_that_does_not_answer_is_named_without_the_webhook_url() -> None:
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    token = secrets.token_urlsafe(16)
    with pytest.raises(AttentionAutomationUnavailable) as failed:
        ensure_attention_automation(
            api,
            "offboard-leaver/offboard-leaver-nowhere",
            SecretStr(f"https://hooks.example.nl/attention?token={token}"),
            instance="nowhere",
        )
    assert api in str(failed.value) and "did not answer" in str(failed.value)
    assert token not in str(failed.value)


def start_case(stack: Stack, employee_id: str, uid: str, name: str) -> tuple[str, str, str]:
    response = send_leaver(stack, employee_id, uid, name)
    assert response.status_code == 202, response.text
    case_id = response.json()["case_id"]
    flow_run_id = run_of(stack, case_id)
    wait_for_state(stack.running.api_url, flow_run_id, "PAUSED")
    email = stack.mailbox.wait_for(lambda m: case_id in text_of(m) and "/approvals/" in text_of(m))
    return case_id, flow_run_id, link_in(email[0])


def test_a_case_that_needs_attention_reaches_the_webhook_and_a_completed_case_does_not(
    fragile_stack: Stack, receiver: Receiver
) -> None:
    stack = fragile_stack
    api = stack.running.api_url
    automation = ensure_attention_automation(
        api,
        stack.settings.deployment,
        SecretStr(receiver.url),
        instance=stack.settings.instance,
        ui_url=stack.running.prefect_ui_url,
    )
    assert automation is not None
    try:
        # a case that completes first: its run's events pass the automation by
        done_case, done_run, link = start_case(stack, "E1020", "zkuipers", "Zoë Kuipers")
        assert decide(link, "approve").status_code == 200
        run = wait_for_state(api, done_run, "COMPLETED", "FAILED", timeout=180)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        done_name = run["name"]

        # then the demo leaver, whose only-member group cannot be emptied: needs attention
        org = stack.org
        case_id, flow_run_id, link = start_case(
            stack, org.leaver_id, org.leaver_uid, org.leaver_name
        )
        assert decide(link, "approve").status_code == 200
        run = wait_for_state(api, flow_run_id, "COMPLETED", "FAILED", timeout=180)
        assert run["state"]["type"] == "FAILED", run["state"]

        post = receiver.wait_for(lambda p: case_id in p.raw, timeout=120)
        message = post.json
        assert post.path.startswith("/hooks/attention")
        assert message["subject"] == f"Needs attention / Aandacht nodig: {run['name']}"
        text = message["text"]
        assert message["body"] in text and message["subject"] in text
        body = message["body"]
        assert f"Zaak {case_id} ({run['name']}) heeft aandacht nodig" in body
        assert f"Case {case_id} ({run['name']}) needs attention" in body
        assert f"{stack.running.prefect_ui_url}/runs/flow-run/{flow_run_id}" in body
        # nothing personal beyond the run's name: no state message (it names the group),
        # no display name; and never the webhook's address
        assert "legacy-ftp" not in post.raw and org.leaver_name not in post.raw
        assert receiver.url.split("?token=")[1] not in post.raw

        # the completed case, whose events came first, sent nothing; nor did anything else
        assert [p for p in receiver.posts if done_case in p.raw or done_name in p.raw] == []
        assert len(receiver.posts) == 1, receiver.posts

        # a crash is told apart: the supervisor marks a dead runner's runs CRASHED through
        # the API, as here (the case is in needs attention: the dispatcher leaves it alone)
        response = prefect(
            "POST",
            f"{api}/flow_runs/{flow_run_id}/set_state",
            json={"state": {"type": "CRASHED", "name": "Crashed"}, "force": True},
        )
        assert response.status_code in (200, 201), response.text
        crash = receiver.wait_for(lambda p: p.json["subject"].startswith("Run crashed"))
        assert crash.json["subject"] == f"Run crashed / Run gecrasht: {run['name']}"
        assert f"De run van zaak {case_id} ({run['name']}) is onverwacht gestopt" in crash.raw
        assert f"The run of case {case_id} ({run['name']}) crashed" in crash.raw
        assert f"/runs/flow-run/{flow_run_id}" in crash.raw
    finally:
        ensure_attention_automation(
            api, stack.settings.deployment, None, instance=stack.settings.instance
        )
