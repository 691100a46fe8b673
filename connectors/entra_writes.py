"""The Graph writes that take a leaver's access away, one grant at a time or in bulk.

A 404 on a removal is "already done" (the membership, assignment or method is gone).
Each write that cannot tell "already done" from its answer reads first: the account
(accountEnabled), the sessions (signInSessionsValidFromDateTime) and a direct licence
(licenseAssignmentStates; Graph answers 400 for a licence the user no longer has).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from connectors.base import AccessGrant, AlreadyDone, Outcome, OutcomeStatus, PermanentError
from connectors.entra_access import (
    ACCOUNT,
    APP_ROLE,
    DEFAULT_METHOD,
    GROUP,
    LICENCE,
    METHOD,
    METHOD_TYPES,
    SESSIONS,
    USER_FIELDS,
    EntraUser,
    is_default,
)
from connectors.entra_graph import BatchItem, GraphClient
from connectors.http import HttpError, NotFound

if TYPE_CHECKING:
    from connectors.entra_graph import BatchResult


class EntraWrites(GraphClient):
    """Revoking grants of the kinds in `connectors.entra_access`."""

    def other_methods(self, client: httpx.Client, grant: AccessGrant) -> list[tuple[str, str]]:
        """(segment, id) of the user's deletable methods other than the default."""
        base = f"users/{grant.account}/authentication"
        methods = self.collect(
            client, self.get_json(client, f"{base}/methods", "methods"), "methods"
        )
        preference = self.get_json(client, f"{base}/signInPreferences", "methods").get(
            "userPreferredMethodForSecondaryAuthentication"
        )
        return [
            (METHOD_TYPES[m["@odata.type"]][0], str(m["id"]))
            for m in methods
            if m.get("@odata.type") in METHOD_TYPES
            and not is_default(m, preference)
            and str(m["id"]) != grant.system_id
        ]

    def _user(self, client: httpx.Client, user_id: str) -> EntraUser:
        try:
            body = self.get_json(client, f"users/{user_id}", "find_user", {"$select": USER_FIELDS})
        except NotFound:
            raise AlreadyDone(f"{self.name}: user {user_id} no longer exists") from None
        return EntraUser.from_graph(body)

    def write_item(self, grant: AccessGrant) -> BatchItem:
        """The one request that removes a grant whose removal needs no read first."""
        user = f"users/{grant.account}"
        if grant.kind == GROUP:
            return BatchItem(
                grant.key,
                "DELETE",
                f"groups/{grant.system_id}/members/{grant.account}/$ref",
                "remove_member",
            )
        if grant.kind == APP_ROLE:
            return BatchItem(
                grant.key,
                "DELETE",
                f"{user}/appRoleAssignments/{grant.system_id}",
                "remove_app_role",
            )
        if grant.kind in (METHOD, DEFAULT_METHOD):
            segment = grant.revoke_data.get("segment")
            if not segment:
                raise PermanentError(
                    f"{self.name}: {grant.label}: Graph has no delete for this "
                    "kind of method; remove it in the Entra admin center"
                )
            return BatchItem(
                grant.key,
                "DELETE",
                f"{user}/authentication/{segment}/{grant.system_id}",
                "delete_method",
            )
        raise PermanentError(f"{self.name}: no single request removes {grant.kind}")

    def revoke_one(self, client: httpx.Client, grant: AccessGrant, action: str) -> str:
        if grant.connector != self.name:
            raise PermanentError(f"{self.name}: grant belongs to connector {grant.connector!r}")
        if grant.kind == ACCOUNT:
            return self._disable(client, grant)
        if grant.kind == SESSIONS:
            return self._revoke_sessions(client, grant)
        if grant.kind == LICENCE:
            return self._remove_licence(client, grant)
        if grant.kind == DEFAULT_METHOD:
            others = self.other_methods(client, grant)
            for segment, method_id in others:  # Graph refuses the default while others remain
                self._delete(
                    client,
                    BatchItem(
                        method_id,
                        "DELETE",
                        f"users/{grant.account}/authentication/{segment}/{method_id}",
                        "delete_method",
                    ),
                )
        item = self.write_item(grant)
        if not self._delete(client, item):
            raise AlreadyDone(f"{self.name}: {grant.label}: already gone (404)")
        return f"{item.method} {item.url}"

    def _delete(self, client: httpx.Client, item: BatchItem) -> bool:
        """False when Graph answers 404: already gone."""
        try:
            self.call(client, item.method, item.url, operation=item.operation)
        except NotFound:
            return False
        except HttpError as exc:
            raise PermanentError(
                f"{exc}; the object may have changed since the plan was made "
                "(e.g. a group became dynamic or synced): review it"
            ) from exc
        return True

    def _disable(self, client: httpx.Client, grant: AccessGrant) -> str:
        user = self._user(client, grant.account)
        if not user.enabled:
            raise AlreadyDone(f"{self.name}: {user.upn} is already disabled")
        if user.synced:
            raise PermanentError(
                f"{self.name}: {user.upn} is synced from on-premises AD; disable it in AD"
            )
        self.call(
            client,
            "PATCH",
            f"users/{grant.account}",
            operation="disable",
            body={"accountEnabled": False},
        )
        return f"PATCH users/{grant.account} accountEnabled=false"

    def _revoke_sessions(self, client: httpx.Client, grant: AccessGrant) -> str:
        user = self._user(client, grant.account)
        if user.sessions_revoked(self.config.sessions_window_hours):
            raise AlreadyDone(
                f"{self.name}: sessions of {user.upn} were revoked at {user.sessions_valid_from}"
            )
        self.call(
            client,
            "POST",
            f"users/{grant.account}/revokeSignInSessions",
            operation="revoke_sessions",
        )
        return f"POST users/{grant.account}/revokeSignInSessions"

    def _remove_licence(self, client: httpx.Client, grant: AccessGrant) -> str:
        sku = grant.revoke_data.get("sku", grant.system_id)
        user = self._user(client, grant.account)
        direct = {str(s.get("skuId")) for s in user.licence_states if not s.get("assignedByGroup")}
        if sku not in direct:
            raise AlreadyDone(f"{self.name}: {user.upn} has no direct licence {grant.target}")
        self.call(
            client,
            "POST",
            f"users/{grant.account}/assignLicense",
            operation="assign_licence",
            body={"addLicenses": [], "removeLicenses": [sku]},
        )
        return f"POST users/{grant.account}/assignLicense remove {sku}"

    # -- bulk ----------------------------------------------------------------------------

    def revoke_in_bulk(self, client: httpx.Client, grants: list[AccessGrant]) -> list[Outcome]:
        """Disable, sessions, then memberships and app roles and methods in `$batch`es
        (the default method in a batch of its own, after the others), then licences."""
        outcomes: list[Outcome] = []

        def one(grant: AccessGrant) -> None:
            action = "disable" if grant.kind == ACCOUNT else "remove"
            try:
                outcomes.append(
                    Outcome(
                        grant, OutcomeStatus.REVOKED, self.revoke_one(client, grant, action), action
                    )
                )
            except AlreadyDone as exc:
                outcomes.append(Outcome(grant, OutcomeStatus.ALREADY_DONE, str(exc), action))

        for grant in [g for g in grants if g.kind in (ACCOUNT, SESSIONS)]:
            one(grant)
        batched = [g for g in grants if g.kind in (GROUP, APP_ROLE, METHOD)]
        defaults = [g for g in grants if g.kind == DEFAULT_METHOD]
        for wave in (batched, defaults):
            items = {g.key: self.write_item(g) for g in wave}
            results = self.batch(client, items.values())
            for grant in wave:
                outcomes.append(self._outcome(grant, items[grant.key], results[grant.key]))
        for grant in [g for g in grants if g.kind == LICENCE]:
            one(grant)
        return outcomes

    def _outcome(self, grant: AccessGrant, item: BatchItem, result: BatchResult) -> Outcome:
        if result.status == 404:
            return Outcome(grant, OutcomeStatus.ALREADY_DONE, "already gone (404)", "remove")
        self.check_item(item, result)
        return Outcome(grant, OutcomeStatus.REVOKED, f"{item.method} {item.url}", "remove")
