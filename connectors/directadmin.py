"""DirectAdmin (CMD_API_* with a login key): the leaver's mailbox, forwarders, FTP accounts
and login keys on the DirectAdmin user that owns the mail domains.

What it reads and writes (see `connectors.panel_common` for the kinds and the policy):

- mailbox: `CMD_API_POP action=full_list` (per account `suspended=yes|no`); disabled with
  `action=modify` (a random `passwd`/`passwd2`) and `action=suspend select0=<user>` (the
  E-Mail Accounts page's Suspend); forward also points the forwarder named like the
  mailbox at `mailbox_forward_to` (`CMD_API_EMAIL_FORWARDERS action=create|modify`);
  `action=delete` only when a policy asks for delete.
- forward: the destinations of the forwarder named like the leaver's mailbox
  (`CMD_API_EMAIL_FORWARDERS action=list`), other than `mailbox_forward_to`; removed with
  `action=modify` (the rest stay) or `action=delete select0=<name>` (none left).
- ftp: `<name>@<domain>` in `CMD_API_FTP action=list`; removed with `action=delete
  select0=<name>`: the API creates, modifies and deletes FTP accounts but cannot suspend one.
  The files in its directory stay.
- panel-user: a login key of the account named like the leaver (`<name>`, `<name>-...`,
  `<name>_...`) in `CMD_API_LOGIN_KEYS`; removed (a key cannot be switched off). The
  connector's own key (`own_login_key_name`) is never listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from connectors.base import (
    DELETE,
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
from connectors.panel_da_api import (
    NEEDED_COMMANDS,
    DirectAdminApi,
    DirectAdminConfig,
    as_list,
    as_map,
    nested,
)

__all__ = ["KIND", "DirectAdminConfig", "DirectAdminConnector", "from_config"]

POP, FORWARDERS, FTP_CMD, KEYS = (
    "CMD_API_POP",
    "CMD_API_EMAIL_FORWARDERS",
    "CMD_API_FTP",
    "CMD_API_LOGIN_KEYS",
)


def _destinations(value: str | None) -> list[str]:
    return [d.strip().lower() for d in (value or "").split(",") if d.strip()]


class DirectAdminConnector:
    """One DirectAdmin user account as one offboarding target."""

    def __init__(
        self,
        config: DirectAdminConfig,
        *,
        dry_run: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = dry_run
        self.api = DirectAdminApi(config, transport=transport, dry_run=dry_run)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            (
                mailbox_capability(self.config),
                KindCapability(FORWARD_GRANT, Effect.DATA, (REMOVE,), "forwarder modify/delete"),
                KindCapability(FTP, Effect.CREDENTIAL, (REMOVE,), "CMD_API_FTP delete"),
                KindCapability(PANEL_USER, Effect.SIGN_IN, (REMOVE,), "login key delete"),
            )
        )

    # -- the Connector protocol ------------------------------------------------------

    def check(self) -> Health:
        problems: list[str] = []
        url = self.config.base_url
        try:
            with self.api.session() as client:
                domains = set(as_list(self.api.read(client, "CMD_API_SHOW_DOMAINS")))
                for domain in self.config.mail_domains:
                    if domain not in domains:
                        problems.append(
                            f"{self.name}: mail domain {domain} is not on the DirectAdmin user "
                            f"{self.config.username} at {url}; fix mail_domains or username"
                        )
                probe = self.config.mail_domains[0]
                for command, params in (
                    (POP, {"action": "list", "domain": probe}),
                    (FORWARDERS, {"action": "list", "domain": probe}),
                    (FTP_CMD, {"action": "list", "domain": probe}),
                    (KEYS, {"action": "list"}),
                ):
                    try:
                        self.api.read(client, command, **params)
                    except PermanentError as exc:
                        problems.append(str(exc))
        except ConnectorError as exc:
            problems.append(str(exc))
        notes = [f"login key of {self.config.username} needs: {', '.join(NEEDED_COMMANDS)}"]
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

    def _mailboxes(self, client: httpx.Client, domain: str) -> dict[str, dict[str, str]]:
        pairs = self.api.read(client, POP, action="full_list", domain=domain)
        return {user: nested(value) for user, value in as_map(pairs).items()}

    def _forwarders(self, client: httpx.Client, domain: str) -> dict[str, list[str]]:
        pairs = self.api.read(client, FORWARDERS, action="list", domain=domain)
        return {name: _destinations(value) for name, value in as_map(pairs).items()}

    def _inventory(self, client: httpx.Client, leaver: Leaver) -> list[AccessGrant]:
        found: list[AccessGrant] = []
        username = username_of(self.config, leaver)
        for address in addresses_of(self.config, leaver):
            local, _, domain = address.partition("@")
            forwarders = self._forwarders(client, domain)
            for destination in forwarders.get(local, []):
                if destination not in (self.config.mailbox_forward_to, address):
                    found.append(
                        grant(self.name, FORWARD_GRANT, Effect.DATA, f"{address}>{destination}",
                              address, destination, forward_label(address, destination),
                              domain=domain, user=local, destination=destination)
                    )  # fmt: skip
            mailbox = self._mailboxes(client, domain).get(local)
            if mailbox is not None and self._mailbox_listed(mailbox, forwarders.get(local)):
                found.append(
                    grant(self.name, MAILBOX, Effect.DATA, address, address, address,
                          mailbox_label(self.config, address), domain=domain, user=local)
                )  # fmt: skip
            ftp = as_map(self.api.read(client, FTP_CMD, action="list", domain=domain))
            if f"{username}@{domain}" in ftp:
                label = Message.of(
                    "panel.grant.ftp_remove",
                    "FTP account %(account)s on %(domain)s: removed (the panel cannot switch one "
                    "off); its files stay",
                    account=username,
                    domain=domain,
                )
                found.append(grant(self.name, FTP, Effect.CREDENTIAL, f"{username}@{domain}",
                                   username, f"{username}@{domain}", label,
                                   domain=domain, user=username))  # fmt: skip
        for key in self._keys_of(client, username):
            label = Message.of(
                "panel.grant.login_key",
                "Login key %(key)s of the panel account %(account)s: removed (a login key "
                "cannot be switched off)",
                key=key,
                account=self.config.username,
            )
            found.append(grant(self.name, PANEL_USER, Effect.SIGN_IN, f"key:{key}", username,
                               key, label, key=key))  # fmt: skip
        return in_order(found)

    def _keys_of(self, client: httpx.Client, username: str) -> list[str]:
        names = as_map(self.api.read(client, KEYS, action="list"))
        own = self.config.own_login_key_name
        return sorted(
            key
            for key in names
            if key != own and (key == username or key.startswith((f"{username}-", f"{username}_")))
        )

    def _mailbox_listed(self, mailbox: Mapping[str, str], forwarder: list[str] | None) -> bool:
        action = self.config.mailbox_action
        if action == KEEP:
            return True
        suspended = mailbox.get("suspended", "no").lower() == "yes"
        if action == FORWARD:
            return not suspended or forwarder != [self.config.mailbox_forward_to]
        return not suspended

    # -- revoking --------------------------------------------------------------------------

    def _revoke(self, client: httpx.Client, grant: AccessGrant, action: str) -> str:
        data: dict[str, Any] = grant.revoke_data
        if grant.kind == FORWARD_GRANT:
            return self._remove_destination(client, data["domain"], data["user"],
                                            data["destination"])  # fmt: skip
        if grant.kind == MAILBOX:
            return self._mailbox(client, data["domain"], data["user"], action)
        if grant.kind == FTP:
            domain, user = data["domain"], data["user"]
            listed = as_map(self.api.read(client, FTP_CMD, action="list", domain=domain))
            if f"{user}@{domain}" not in listed:
                raise AlreadyDone(f"FTP account {user}@{domain} no longer exists")
            self.api.write(client, FTP_CMD, action="delete", domain=domain, select0=user)
            return f"removed FTP account {user}@{domain} (its files stay)"
        key = data["key"]
        if key not in as_map(self.api.read(client, KEYS, action="list")):
            raise AlreadyDone(f"login key {key} no longer exists")
        self.api.write(client, KEYS, action="delete", select0=key)
        return f"removed login key {key} of {self.config.username}"

    def _remove_destination(self, client: httpx.Client, domain: str, user: str, to: str) -> str:
        current = self._forwarders(client, domain).get(user, [])
        if to not in current:
            raise AlreadyDone(f"{user}@{domain} no longer forwards to {to}")
        rest = [d for d in current if d != to]
        if rest:
            self.api.write(client, FORWARDERS, action="modify", domain=domain, user=user,
                           email=",".join(rest))  # fmt: skip
        else:
            self.api.write(client, FORWARDERS, action="delete", domain=domain, select0=user)
        return f"removed the forwarding of {user}@{domain} to {to}"

    def _mailbox(self, client: httpx.Client, domain: str, user: str, action: str) -> str:
        address = f"{user}@{domain}"
        mailbox = self._mailboxes(client, domain).get(user)
        if mailbox is None:
            raise AlreadyDone(f"mailbox {address} no longer exists")
        if action == DELETE:
            self.api.write(client, POP, action="delete", domain=domain, user=user)
            return f"deleted mailbox {address} (asked for by the policy)"
        to = self.config.mailbox_forward_to
        forwarder = self._forwarders(client, domain).get(user)
        suspended = mailbox.get("suspended", "no").lower() == "yes"
        if suspended and (action != FORWARD or forwarder == [to]):
            raise AlreadyDone(f"mailbox {address} is already suspended")
        password = random_password()
        self.api.write(client, POP, action="modify", domain=domain, user=user,
                       passwd=password, passwd2=password)  # fmt: skip
        if not suspended:
            self.api.write(client, POP, action="suspend", domain=domain, select0=user)
        done = f"suspended mailbox {address} with a random password; its mail is kept"
        if action == FORWARD and to and forwarder != [to]:
            verb = "modify" if forwarder is not None else "create"
            self.api.write(client, FORWARDERS, action=verb, domain=domain, user=user, email=to)
            done += f"; new mail goes to {to}"
        return done


def from_config(
    config: Mapping[str, Any], dry_run: bool, transport: httpx.BaseTransport | None = None
) -> DirectAdminConnector:
    return DirectAdminConnector(
        DirectAdminConfig.model_validate(dict(config)), dry_run=dry_run, transport=transport
    )


KIND = ConnectorKind(
    kind="directadmin",
    config=DirectAdminConfig,
    build=lambda config, dry_run: DirectAdminConnector(config, dry_run=dry_run),
    description="DirectAdmin (CMD_API_* with a login key): suspend or forward the leaver's "
    "mailbox (mail kept), remove their forwarders, FTP accounts and login keys",
)
