"""Plesk (Obsidian, REST API v2 + CLI gateway): the leaver's mailbox, forwards, additional
FTP accounts and panel user.

What it reads and writes (see `connectors.panel_common` for the kinds and the policy):

- mailbox: `mail --info <address>`; disabled with `mail --update <address> -mailbox false
  -passwd <random>` (forward: also `-forwarding true -forwarding-addresses add:<to>`);
  deleted only when a policy asks with `mail --remove`.
- forward: the addresses in `Forwarding address(es)` of `mail --info` other than
  `mailbox_forward_to`; removed with `-forwarding-addresses del:<address>`.
- ftp: `ftpsubaccount --info <name>`; removed with `ftpsubaccount --remove <name>`: the
  utility can create, update and remove additional FTP accounts but not switch one off.
  Its files stay in the subscription.
- panel-user: the additional (auxiliary) user, `user --info <login>`; disabled with
  `user --update <login> -status disabled -passwd <random>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from connectors.base import (
    DELETE,
    DISABLE,
    KEEP,
    REMOVE,
    AccessGrant,
    AlreadyDone,
    Capabilities,
    ConnectorError,
    Effect,
    Health,
    KindCapability,
    Leaver,
    Message,
    Outcome,
    PermanentError,
    Verification,
    revoke_step,
)
from connectors.config import ConnectorKind
from connectors.panel_common import (
    FORWARD,
    FORWARD_GRANT,
    FTP,
    MAILBOX,
    PANEL_USER,
    addresses_of,
    checks_for,
    forward_label,
    grant,
    in_order,
    mailbox_capability,
    mailbox_label,
    random_password,
    username_of,
)
from connectors.panel_plesk_cli import PleskApi, PleskCli, PleskConfig

__all__ = ["KIND", "PleskConfig", "PleskConnector", "from_config"]

NEEDED_COMMANDS = ("mail", "ftpsubaccount", "user")


def _forwards(info: Mapping[str, str]) -> list[str]:
    raw = info.get("forwarding address(es)", "") or info.get("forwarding addresses", "")
    return [a.strip().lower() for a in raw.replace(";", ",").split(",") if "@" in a]


def _on(info: Mapping[str, str], key: str) -> bool:
    return info.get(key, "").strip().lower() in ("true", "yes", "on", "enabled")


class PleskConnector:
    """A Plesk server as one offboarding target."""

    def __init__(
        self,
        config: PleskConfig,
        *,
        dry_run: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self.api = PleskApi(config, transport=transport, dry_run=dry_run)
        self.cli = PleskCli(self.api, PleskApi(config, transport=transport, dry_run=False))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            (
                mailbox_capability(self.config),
                KindCapability(FORWARD_GRANT, Effect.DATA, (REMOVE,), "-forwarding-addresses del"),
                KindCapability(FTP, Effect.CREDENTIAL, (REMOVE,), "ftpsubaccount --remove"),
                KindCapability(PANEL_USER, Effect.SIGN_IN, (DISABLE,), "-status disabled"),
            )
        )

    # -- the Connector protocol ------------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        notes: list[str] = []
        url = self.config.base_url
        try:
            with self.api.session() as client:
                server = self.api.get_json(client, "api/v2/server")
                notes.append(f"Plesk {server.get('panel_version', '?')} at {url}")
                domains = {
                    str(d.get("name", "")).lower()
                    for d in self.api.get_json(client, "api/v2/domains")
                }
                for domain in self.config.mail_domains:
                    if domain not in domains:
                        problems.append(
                            f"{self.name}: mail domain {domain} is not on {url}; fix mail_domains"
                        )
                commands = set(self.api.get_json(client, "api/v2/cli/commands"))
                for command in NEEDED_COMMANDS:
                    if command not in commands:
                        problems.append(
                            f"{self.name}: the CLI gateway of {url} does not offer {command!r}; "
                            "it is needed to reach mailboxes, FTP accounts and users"
                        )
        except ConnectorError as exc:
            problems.append(str(exc))
        return Health(ok=not problems, messages=problems + notes)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        with self.api.session() as client:
            return self._inventory(client, leaver)

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        def perform(chosen: str) -> str:
            if grant.connector != self.name:
                raise PermanentError(f"{self.name}: grant belongs to {grant.connector!r}")
            with self.api.session() as client:
                return self._revoke(client, grant, chosen)

        return revoke_step(self.name, self.capabilities, grant, action, perform)

    def verify(self, leaver: Leaver) -> Verification:
        kinds = [k.kind for k in self.capabilities.kinds if k.revocable]
        if self.config.mailbox_action == KEEP:
            kinds.remove(MAILBOX)
        remaining = [g for g in self.inventory(leaver) if g.kind in kinds]
        return Verification(remaining, checks_for(remaining, kinds))

    # -- reading -------------------------------------------------------------------------

    def _inventory(self, client: httpx.Client, leaver: Leaver) -> list[AccessGrant]:
        found: list[AccessGrant] = []
        for address in addresses_of(self.config, leaver):
            info = self.cli.info(client, "mail", address)
            if info is None:
                continue
            for destination in _forwards(info):
                if destination != self.config.mailbox_forward_to:
                    found.append(
                        grant(self.name, FORWARD_GRANT, Effect.DATA, f"{address}>{destination}",
                              address, destination, forward_label(address, destination),
                              address=address, destination=destination)
                    )  # fmt: skip
            if self._mailbox_listed(info):
                found.append(
                    grant(self.name, MAILBOX, Effect.DATA, address, address, address,
                          mailbox_label(self.config, address), address=address)
                )  # fmt: skip
        username = username_of(self.config, leaver)
        ftp = self.cli.info(client, "ftpsubaccount", username)
        if ftp is not None:
            where = ftp.get("domain") or ftp.get("subscription") or "?"
            label = Message.of(
                "panel.grant.ftp_remove",
                "FTP account %(account)s on %(domain)s: removed (the panel cannot switch one "
                "off); its files stay",
                account=username,
                domain=where,
            )
            found.append(grant(self.name, FTP, Effect.CREDENTIAL, username, username,
                               f"{username} ({where})", label, name=username))  # fmt: skip
        user = self.cli.info(client, "user", username)
        if user is not None and user.get("status", "enabled").lower() != "disabled":
            label = Message.of(
                "panel.grant.panel_user",
                "Panel user %(account)s: disabled, with a random password",
                account=username,
            )
            found.append(grant(self.name, PANEL_USER, Effect.SIGN_IN, f"user:{username}",
                               username, username, label, login=username))  # fmt: skip
        return in_order(found)

    def _mailbox_listed(self, info: Mapping[str, str]) -> bool:
        """Listed while the configured action still has something to do (always for keep)."""
        action = self.config.mailbox_action
        if action == KEEP:
            return True
        open_ = _on(info, "mailbox")
        if action == FORWARD:
            target = self.config.mailbox_forward_to
            return open_ or not (_on(info, "forwarding") and target in _forwards(info))
        return open_

    # -- revoking --------------------------------------------------------------------------

    def _revoke(self, client: httpx.Client, grant: AccessGrant, action: str) -> str:
        data: dict[str, Any] = grant.revoke_data
        if grant.kind == FORWARD_GRANT:
            return self._remove_forward(client, data["address"], data["destination"])
        if grant.kind == MAILBOX:
            return self._mailbox(client, data["address"], action)
        if grant.kind == FTP:
            if self.cli.info(client, "ftpsubaccount", data["name"]) is None:
                raise AlreadyDone(f"FTP account {data['name']} no longer exists")
            self.cli.run(client, "ftpsubaccount", ["--remove", data["name"]])
            return f"removed FTP account {data['name']} (its files stay)"
        login = data["login"]
        user = self.cli.info(client, "user", login)
        if user is None:
            raise AlreadyDone(f"panel user {login} no longer exists")
        if user.get("status", "").lower() == "disabled":
            raise AlreadyDone(f"panel user {login} is already disabled")
        params = ["--update", login, "-status", "disabled", "-passwd", random_password()]
        self.cli.run(client, "user", params)
        return f"disabled panel user {login} and set a random password"

    def _remove_forward(self, client: httpx.Client, address: str, destination: str) -> str:
        info = self.cli.info(client, "mail", address)
        if info is None or destination not in _forwards(info):
            raise AlreadyDone(f"{address} no longer forwards to {destination}")
        params = ["--update", address, "-forwarding-addresses", f"del:{destination}"]
        left = [a for a in _forwards(info) if a != destination]
        if not left:
            params += ["-forwarding", "false"]
        self.cli.run(client, "mail", params)
        return f"removed the forwarding of {address} to {destination}"

    def _mailbox(self, client: httpx.Client, address: str, action: str) -> str:
        info = self.cli.info(client, "mail", address)
        if info is None:
            raise AlreadyDone(f"mailbox {address} no longer exists")
        if action == DELETE:
            self.cli.run(client, "mail", ["--remove", address])
            return f"deleted mailbox {address} (asked for by the policy)"
        to = self.config.mailbox_forward_to
        forwarding = _on(info, "forwarding") and to in _forwards(info)
        if not _on(info, "mailbox") and (action != FORWARD or forwarding):
            raise AlreadyDone(f"mailbox {address} is already disabled")
        params = ["--update", address, "-mailbox", "false", "-passwd", random_password()]
        if action == FORWARD and to and not forwarding:
            params += ["-forwarding", "true", "-forwarding-addresses", f"add:{to}"]
        self.cli.run(client, "mail", params)
        done = f"disabled mailbox {address} with a random password; its mail is kept"
        return done + (f"; new mail goes to {to}" if action == FORWARD else "")


def from_config(
    config: Mapping[str, Any], dry_run: bool, transport: httpx.BaseTransport | None = None
) -> PleskConnector:
    return PleskConnector(
        PleskConfig.model_validate(dict(config)), dry_run=dry_run, transport=transport
    )


KIND = ConnectorKind(
    kind="plesk",
    config=PleskConfig,
    build=lambda config, dry_run: PleskConnector(config, dry_run=dry_run),
    description="Plesk (REST API v2 + CLI gateway): disable or forward the leaver's mailbox "
    "(mail kept), remove their forwards and FTP accounts, disable their panel user",
)
