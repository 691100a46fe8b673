"""What the hosting-panel connectors (Plesk, DirectAdmin) share: their settings, the kinds of
access they list, what each kind's label says will happen, and how verification reads.

A leaver is found by their work email: their mailbox is `<local part>@<domain>` for each
configured `mail_domains`; their FTP account, panel user or login key by the name in
`usernames` (employee id -> name), else by the local part of their email.

Kinds (the `system_id` is the panel's own name of the object):

- `mailbox` (effect data): the mailbox itself. What happens to it is the configured
  `mailbox_action`, shown in the grant's label: `disable` (default: mail sign-in off and a
  random password; the mail stays), `forward` (the same, and new mail goes to
  `mailbox_forward_to`, e.g. the manager), `keep` (reported, not touched). `delete` is offered
  for a policy that asks for it explicitly, and is never the default.
- `forward` (effect data): a forwarding of the leaver's address to somewhere else (their own
  forwarders, e.g. to a private address); removed.
- `ftp` (effect credential): an FTP (sub)account; how each panel revokes it is in its module.
- `panel-user` (effect sign_in): a panel user (Plesk additional user) or a login key
  (DirectAdmin) of the leaver.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.base import (
    DELETE,
    DISABLE,
    KEEP,
    AccessGrant,
    Check,
    Effect,
    KindCapability,
    Leaver,
    Message,
)
from connectors.http import HttpConfig

MAILBOX, FORWARD_GRANT, FTP, PANEL_USER = "mailbox", "forward", "ftp", "panel-user"
FORWARD = "forward"  # the mailbox action: disable, and send new mail to mailbox_forward_to
KIND_ORDER = {FORWARD_GRANT: 0, MAILBOX: 1, FTP: 2, PANEL_USER: 3}
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.+"


class PanelConfig(HttpConfig):
    """Settings both hosting panels have."""

    mail_domains: list[str] = Field(min_length=1)
    """The mail domains on the panel; the leaver's mailbox is <local part of their email>@each."""
    usernames: dict[str, str] = {}
    """Employee id -> the leaver's FTP / panel user name, where it is not the local part of
    their email."""
    mailbox_action: Literal["disable", "forward", "keep"] = "disable"
    """What happens to the leaver's mailbox: disable (mail sign-in off, random password, mail
    kept), forward (the same, and new mail goes to mailbox_forward_to) or keep (reported only).
    A policy may still ask for delete explicitly; it is never the default."""
    mailbox_forward_to: str | None = None
    """Where a forwarded mailbox's new mail goes (e.g. the manager's address)."""

    @field_validator("mail_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [domain.strip().lower() for domain in value]

    @field_validator("mailbox_forward_to")
    @classmethod
    def _an_address(cls, value: str | None) -> str | None:
        if value is not None and (value.count("@") != 1 or value.startswith("@")):
            raise ValueError(f"mailbox_forward_to {value!r} is not an email address")
        return value.strip().lower() if value else value

    @model_validator(mode="after")
    def _forward_needs_address(self) -> PanelConfig:
        if self.mailbox_action == FORWARD and not self.mailbox_forward_to:
            raise ValueError("mailbox_action is forward: set mailbox_forward_to")
        return self


def random_password(length: int = 24) -> str:
    """A password nobody knows: the account keeps existing but no one can sign in with it."""
    while True:
        word = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))
        if any(c.isdigit() for c in word) and any(c.isupper() for c in word):
            return word


def addresses_of(config: PanelConfig, leaver: Leaver) -> list[str]:
    """The leaver's mail address on each configured domain."""
    local = leaver.email.partition("@")[0].strip().lower()
    return [f"{local}@{domain}" for domain in config.mail_domains] if local else []


def username_of(config: PanelConfig, leaver: Leaver) -> str:
    """The leaver's FTP / panel user name."""
    mapped = config.usernames.get(leaver.employee_id)
    return mapped or leaver.email.partition("@")[0].strip().lower()


def mailbox_capability(config: PanelConfig) -> KindCapability:
    """Mailbox actions, the configured one first; delete last and never the default."""
    actions = [DISABLE] + ([FORWARD] if config.mailbox_forward_to else []) + [KEEP]
    chosen = config.mailbox_action
    ordered = (chosen, *(a for a in actions if a != chosen), DELETE)
    return KindCapability(MAILBOX, Effect.DATA, ordered, "mail sign-in off + random password")


def mailbox_label(config: PanelConfig, address: str) -> Message:
    """What the plan will do with the mailbox, as the policy is configured."""
    if config.mailbox_action == KEEP:
        return Message.of(
            "panel.grant.mailbox_keep",
            "Mailbox %(address)s: kept as it is (the policy keeps it)",
            address=address,
        )
    if config.mailbox_action == FORWARD:
        return Message.of(
            "panel.grant.mailbox_forward",
            "Mailbox %(address)s: new mail forwarded to %(forward_to)s, sign-in disabled "
            "with a random password; the mail in it is kept",
            address=address,
            forward_to=config.mailbox_forward_to or "?",
        )
    return Message.of(
        "panel.grant.mailbox_disable",
        "Mailbox %(address)s: sign-in disabled with a random password; the mail in it is kept",
        address=address,
    )


def forward_label(address: str, destination: str) -> Message:
    return Message.of(
        "panel.grant.forward",
        "Forwarding of %(address)s to %(destination)s",
        address=address,
        destination=destination,
    )


def grant(
    connector: str,
    kind: str,
    effect: Effect,
    system_id: str,
    account: str,
    target: str,
    label: Message,
    **revoke_data: str,
) -> AccessGrant:
    return AccessGrant(
        connector=connector,
        kind=kind,
        effect=effect,
        system_id=system_id,
        account=account,
        target=target,
        label=label,
        revoke_data=revoke_data,
    )


def in_order(grants: Iterable[AccessGrant]) -> list[AccessGrant]:
    return sorted(grants, key=lambda g: (KIND_ORDER.get(g.kind, 9), g.system_id))


_CHECK_NAMES = {
    MAILBOX: Message.of("panel.check.mailboxes", "mailbox sign-in disabled"),
    FORWARD_GRANT: Message.of("panel.check.forwards", "no forwarding to other addresses"),
    FTP: Message.of("panel.check.ftp", "no FTP account left"),
    PANEL_USER: Message.of("panel.check.panel_users", "no panel access left"),
}


def checks_for(remaining: list[AccessGrant], kinds: Iterable[str]) -> list[Check]:
    """One check per kind the connector revokes: passed when nothing of that kind is left."""
    result = []
    for kind in kinds:
        left = [g.target for g in remaining if g.kind == kind]
        detail = (
            Message.of("panel.detail.left", "still there: %(items)s", items=", ".join(left))
            if left
            else Message.of("panel.detail.none_left", "none left")
        )
        result.append(Check(_CHECK_NAMES[kind], not left, detail))
    return result
