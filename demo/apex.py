"""The demo's information system: a SCIM app standing in for the company's own web app
(an Oracle APEX or Laravel application that speaks SCIM 2.0).

It is seeded over SCIM itself with some of the demo organisation's people: userName is
their work email and externalId their employee id, so the SCIM connector finds the leaver
the way it does by default (userName = the email HR sends). Jan de Vries (E1042), the demo
leaver, is in both groups, `apex-users` and `apex-admins`, each with colleagues who keep
their access.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from demo.organisation import EMPLOYEES, LEAVER_ID, email_of

# The connector's name: what plans, approval pages and emails show as the system.
NAME = "Informatiesysteem (APEX)"
GROUPS: dict[str, tuple[str, ...]] = {
    "apex-users": ("jdevries", "fmeijer", "jdekker", "edewit", "ihendriks"),
    "apex-admins": ("jdevries", "bmulder"),
}
MISSING = (
    "The SCIM app (Informatiesysteem (APEX)) is left out: scim2-server is not installed; "
    "run scripts/bootstrap"
)
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


class ScimAppUnavailable(RuntimeError):
    """scim2-server, a development dependency, is not installed."""


@dataclass(frozen=True)
class ApexApp:
    """The running, seeded SCIM app."""

    base_url: str
    token: str = field(repr=False)
    users: dict[str, str]  # userName -> SCIM id
    groups: dict[str, str]  # displayName -> SCIM id
    leaver_user_name: str

    def connector_config(self) -> dict[str, Any]:
        """A `kind: scim` connector config for this app."""
        return {"name": NAME, "kind": "scim", "base_url": self.base_url, "token": self.token}


@contextmanager
def running_apex(*, token: str) -> Iterator[ApexApp]:
    """Start the SCIM app, accepting only `token`, and seed it; stopped on exit.

    Raises ScimAppUnavailable, with a message that says what to do, without scim2-server.
    """
    try:
        from demo.scim_app import running_scim_app
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in ("scim2_server", "scim2_models"):
            raise
        raise ScimAppUnavailable(MISSING) from exc
    with running_scim_app(token) as served:
        yield seed_apex(served.base_url, token=token)


def seed_apex(base_url: str, *, token: str) -> ApexApp:
    """Create the people, then the groups, over SCIM (POST /Users, POST /Groups)."""
    person = {uid: (employee_id, given, sn) for employee_id, uid, given, sn, *_ in EMPLOYEES}
    with httpx.Client(
        base_url=f"{base_url}/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as client:
        ids: dict[str, str] = {}
        for uid in dict.fromkeys(uid for members in GROUPS.values() for uid in members):
            employee_id, given, surname = person[uid]
            ids[uid] = _create(
                client,
                "Users",
                {
                    "schemas": [USER_SCHEMA],
                    "userName": email_of(uid),
                    "externalId": employee_id,
                    "displayName": f"{given} {surname}",
                    "name": {"givenName": given, "familyName": surname},
                    "emails": [{"value": email_of(uid), "type": "work", "primary": True}],
                    "active": True,
                },
            )
        groups = {
            name: _create(
                client,
                "Groups",
                {
                    "schemas": [GROUP_SCHEMA],
                    "displayName": name,
                    "members": [{"value": ids[uid], "type": "User"} for uid in members],
                },
            )
            for name, members in GROUPS.items()
        }
    leaver_uid = next(uid for employee_id, uid, *_ in EMPLOYEES if employee_id == LEAVER_ID)
    return ApexApp(
        base_url=base_url,
        token=token,
        users={email_of(uid): id_ for uid, id_ in ids.items()},
        groups=groups,
        leaver_user_name=email_of(leaver_uid),
    )


def _create(client: httpx.Client, endpoint: str, resource: dict[str, Any]) -> str:
    response = client.post(endpoint, json=resource)
    if response.status_code != 201:
        raise RuntimeError(
            f"the demo's SCIM app refused POST /{endpoint}: HTTP {response.status_code} "
            f"{response.text[:200]}"
        )
    return str(response.json()["id"])
