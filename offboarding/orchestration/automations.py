"""Tell management when a case's run stops: a Prefect automation that posts to a webhook.

When a case stops in *needs attention*, its flow run ends FAILED (`flows.offboard_leaver`,
`stop_for_attention`); a run whose process dies ends CRASHED (the service reschedules it).
Prefect's server sees both as events (`prefect.flow-run.Failed`, `prefect.flow-run.Crashed`);
an automation on this installation's offboard deployment reacts to each one with a
`send-notification` action through one of Prefect's own notification blocks:

- `MicrosoftTeamsWebhook` for a Microsoft Teams workflow (Power Automate) URL,
- `SlackWebhook` for a Slack incoming webhook (hooks.slack.com),
- otherwise `CustomWebhookNotificationBlock`, posting JSON `{"text", "subject", "body"}`
  (the `text` key is what Slack, Mattermost, Google Chat and classic Teams webhooks show).

The message names the run (`offboard-E1042-jdevries`), the case id and a link to the run in
the Prefect UI, in Dutch and English; never the state message (it may name a person's
access) and never the webhook URL, which Prefect keeps as a secret field of the block.

`ensure_attention_automation` is idempotent: one block and one automation, both named
`offboarding-needs-attention-<instance>`, updated in place when the URL changes, and both
deleted when the URL is unset.
"""

from __future__ import annotations

import asyncio
from typing import Literal
from urllib.parse import urlsplit
from uuid import UUID

import httpx
import structlog
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.notifications import (
    CustomWebhookNotificationBlock,
    MicrosoftTeamsWebhook,
    SlackWebhook,
)
from prefect.client.orchestration import PrefectClient
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from pydantic import SecretStr, ValidationError

log = structlog.get_logger(__name__)

WebhookKind = Literal["teams", "slack", "custom"]
BLOCK_TYPES: dict[WebhookKind, type[NotificationBlock]] = {
    "teams": MicrosoftTeamsWebhook,
    "slack": SlackWebhook,
    "custom": CustomWebhookNotificationBlock,
}
_TEAMS_HOSTS = (".logic.azure.com", ".powerplatform.com", ".powerautomate.com")
_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_FAILED, _CRASHED = "prefect.flow-run.Failed", "prefect.flow-run.Crashed"


class AttentionWebhookError(RuntimeError):
    """The attention webhook URL cannot be used; the message names the setting and the host,
    never the URL. (A RuntimeError: the service refuses to start with it, like a taken port.)"""


class AttentionAutomationUnavailable(RuntimeError):
    """Prefect's API refused or did not answer while the automation was set up."""


def automation_name(instance: str) -> str:
    """The automation's and the block's name: one of each per installation."""
    return f"offboarding-needs-attention-{instance}"


def webhook_kind(url: str) -> WebhookKind:
    """Which of Prefect's notification blocks speaks to this URL."""
    host = (urlsplit(url).hostname or "").lower()
    if host.endswith(_TEAMS_HOSTS):
        return "teams"
    if host in _SLACK_HOSTS:
        return "slack"
    return "custom"


def notification_block(url: SecretStr, name: str) -> NotificationBlock:
    """The block that posts to `url`; the URL stays a secret field (hidden in Prefect's UI
    and API unless secrets are asked for)."""
    raw = url.get_secret_value()
    parts = urlsplit(raw)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise AttentionWebhookError(
            "attention_webhook_url: not an http(s) URL; give the webhook address from "
            "Microsoft Teams (a workflow), Slack or another service that takes a JSON POST"
        )
    kind = webhook_kind(raw)
    try:
        if kind == "teams":
            return MicrosoftTeamsWebhook(url=url)
        if kind == "slack":
            return SlackWebhook(url=url)
        return CustomWebhookNotificationBlock(
            name=name,
            url="{{webhook_url}}",
            json_data={
                "text": "{{subject}}\n\n{{body}}",
                "subject": "{{subject}}",
                "body": "{{body}}",
            },
            secrets={"webhook_url": raw},  # coerced to a SecretDict
        )
    except (ValidationError, ValueError, KeyError) as exc:
        what = {"teams": "a Microsoft Teams workflow", "slack": "a Slack webhook"}.get(kind, "a")
        raise AttentionWebhookError(
            f"attention_webhook_url: the URL on {host} is not {what} URL Prefect can post to "
            f"({type(exc).__name__}); copy it again from the webhook's settings"
        ) from None  # the cause may quote the URL


# -- the automation --------------------------------------------------------------------------


def _subject() -> str:
    return (
        f'{{% if event.event == "{_CRASHED}" %}}'
        "Run crashed / Run gecrasht"
        "{% else %}"
        "Needs attention / Aandacht nodig"
        "{% endif %}: {{ event.resource.name }}"
    )


def _body(ui_url: str) -> str:
    link = f"{ui_url.rstrip('/')}/runs/flow-run/{{{{ flow_run.id }}}}"
    case = "{{ flow_run.parameters.request.case_id }} ({{ event.resource.name }})"
    return (
        f'{{% if event.event == "{_CRASHED}" %}}'
        f"NL: De run van zaak {case} is onverwacht gestopt (Crashed). De service start hem "
        "automatisch opnieuw; lukt dat niet, dan komt de zaak op 'aandacht nodig' en krijgt "
        "de aanvrager een e-mail.\n\n"
        f"EN: The run of case {case} crashed. The service restarts it automatically; if that "
        "keeps failing, the case goes to needs attention and the requester gets an email."
        "{% else %}"
        f"NL: Zaak {case} heeft aandacht nodig: de run is gestopt (Failed). De aanvrager "
        "heeft een e-mail met wat wel en niet is gedaan. Herstel de oorzaak en kies daarna "
        "Retry bij de run in Prefect.\n\n"
        f"EN: Case {case} needs attention: its run stopped (Failed). The requester got an "
        "email with what was and was not done. Fix the cause, then Retry the run in Prefect."
        "{% endif %}\n\n"
        f"{link}"
    )


def attention_automation(
    *,
    name: str,
    deployment: str,
    block_document_id: UUID,
    ui_url: str,
    include_crashes: bool = True,
) -> AutomationCore:
    """React to every FAILED (and CRASHED) run of `deployment` ("flow/deployment") at once.

    Matched on the flow's and the deployment's names, not the deployment's id: a deployment
    deleted and registered again (a new id) is still watched."""
    flow_name, deployment_name = deployment.split("/", 1)
    return AutomationCore(
        name=name,
        description=(
            f"Posts to the attention webhook when a run of {deployment} fails (the case "
            "needs attention) or crashes. Managed by the offboarding service: changes here "
            "are overwritten at its next start."
        ),
        enabled=True,
        trigger=EventTrigger(
            expect={_FAILED, _CRASHED} if include_crashes else {_FAILED},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": flow_name},
                {"prefect.resource.role": "deployment", "prefect.resource.name": deployment_name},
            ],
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_document_id, subject=_subject(), body=_body(ui_url)
            )
        ],
    )


async def _our_blocks(client: PrefectClient, name: str) -> dict[WebhookKind, UUID]:
    found: dict[WebhookKind, UUID] = {}
    for kind, block_type in BLOCK_TYPES.items():
        try:
            document = await client.read_block_document_by_name(
                name, block_type.get_block_type_slug(), include_secrets=False
            )
        except ObjectNotFound:
            continue
        found[kind] = document.id
    return found


async def apply_attention_automation(
    client: PrefectClient,
    *,
    deployment: str,
    instance: str,
    webhook_url: SecretStr | None,
    ui_url: str,
    include_crashes: bool = True,
) -> str | None:
    """Make Prefect hold exactly what the setting says: with a URL, one block and one
    enabled automation (created, or updated in place); without, neither. Returns the
    automation's id, or None."""
    name = automation_name(instance)
    existing = await client.read_automations_by_name(name)  # newest first
    blocks = await _our_blocks(client, name)
    if webhook_url is None or not webhook_url.get_secret_value():
        for automation in existing:
            await client.delete_automation(automation.id)
        for block_id in blocks.values():
            await client.delete_block_document(block_id)
        if existing or blocks:
            log.info("attention automation removed", automation=name)
        return None

    block = notification_block(webhook_url, name)
    block_id = await block.asave(name, overwrite=True, client=client)
    wanted = attention_automation(
        name=name,
        deployment=deployment,
        block_document_id=block_id,
        ui_url=ui_url,
        include_crashes=include_crashes,
    )
    if existing:
        automation_id = existing[0].id
        await client.update_automation(automation_id, wanted)
        for extra in existing[1:]:  # two services started at once on a fresh server
            await client.delete_automation(extra.id)
    else:
        automation_id = await client.create_automation(wanted)
    for stale in blocks.values():  # the URL moved to another kind of webhook
        if stale != block_id:
            await client.delete_block_document(stale)
    log.info(
        "attention automation ready",
        automation=name,
        webhook=webhook_kind(webhook_url.get_secret_value()),
    )
    return str(automation_id)


def ensure_attention_automation(
    api_url: str,
    deployment: str,
    webhook_url: SecretStr | None,
    *,
    instance: str,
    ui_url: str | None = None,
    include_crashes: bool = True,
) -> str | None:
    """`apply_attention_automation` against the Prefect API at `api_url`, from synchronous
    code (the service's start-up). `ui_url`: the Prefect UI as management opens it (default:
    `api_url` without `/api`)."""

    async def apply() -> str | None:
        async with PrefectClient(api_url) as client:
            return await apply_attention_automation(
                client,
                deployment=deployment,
                instance=instance,
                webhook_url=webhook_url,
                ui_url=ui_url or api_url.removesuffix("/").removesuffix("/api"),
                include_crashes=include_crashes,
            )

    try:
        return asyncio.run(apply())
    except httpx.HTTPError as exc:  # Prefect's client errors are httpx errors too
        # only the status: an error body may echo the block's data, the webhook URL with it
        status = getattr(getattr(exc, "response", None), "status_code", None)
        answer = f"answered {status}" if status else "did not answer"
        raise AttentionAutomationUnavailable(
            f"the Prefect server at {api_url} {answer} while setting up the automation "
            f"{automation_name(instance)!r} ({type(exc).__name__}); see its log"
        ) from None
