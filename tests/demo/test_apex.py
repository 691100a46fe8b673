"""The demo's information system: a real SCIM app (scim2-server) seeded over SCIM."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from connectors.base import Effect, Leaver
from connectors.registry import build_connector
from demo.apex import GROUPS, NAME, ApexApp, ScimAppUnavailable, running_apex
from demo.organisation import EMPLOYEES, LEAVER_ID
from demo.scim_app import bearer_token_app

TOKEN = "apex-demo-test-token-7c1e"
JAN = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")


@pytest.fixture
def apex() -> Iterator[ApexApp]:
    with running_apex(token=TOKEN) as running:
        yield running


def scim(apex: ApexApp, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=apex.base_url + "/", headers=headers, timeout=5)


def test_the_leaver_and_colleagues_are_found_as_the_connector_finds_them(apex: ApexApp) -> None:
    employee_of = {f"{uid}@example.test": employee_id for employee_id, uid, *_ in EMPLOYEES}
    with scim(apex) as client:
        users = client.get("Users").json()["Resources"]
        groups = {g["displayName"]: g for g in client.get("Groups").json()["Resources"]}
    # userName is the work email, externalId the employee id, for every seeded person
    assert {u["userName"]: u["externalId"] for u in users} == {
        u["userName"]: employee_of[u["userName"]] for u in users
    }
    assert len(users) == len(apex.users) == 6
    assert employee_of[apex.leaver_user_name] == LEAVER_ID
    jan = apex.users[apex.leaver_user_name]
    for name, members in GROUPS.items():
        member_ids = {m["value"] for m in groups[name]["members"]}
        assert jan in member_ids
        assert len(member_ids) == len(members) >= 2  # colleagues who keep their access

    connector = build_connector(apex.connector_config())
    assert connector.check().ok
    grants = connector.inventory(JAN)
    assert {g.connector for g in grants} == {NAME}
    memberships = [g for g in grants if g.effect is Effect.MEMBERSHIP]
    sign_in = [g for g in grants if g.effect is Effect.SIGN_IN]
    assert len(memberships) == 2 and len(sign_in) == 1 and len(grants) == 3
    named = {gid for g in memberships for gid in apex.groups.values() if gid in g.model_dump_json()}
    assert named == set(apex.groups.values())
    assert jan in sign_in[0].model_dump_json()


def test_the_scim_app_answers_only_its_token(apex: ApexApp) -> None:
    with scim(apex, token=None) as anonymous, scim(apex, token="not-the-token") as wrong:
        assert anonymous.get("Users").status_code == 401
        assert wrong.get("Users").status_code == 401
    assert TOKEN not in repr(apex)
    with pytest.raises(ValueError, match="bearer token"):
        bearer_token_app("")  # scim2-server would accept every request


def test_without_scim2_server_the_demo_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["scim2_server", *sys.modules]:  # every import of scim2_server(.*) fails
        if name.partition(".")[0] == "scim2_server":
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "demo.scim_app", raising=False)
    with pytest.raises(ScimAppUnavailable) as refused, running_apex(token=TOKEN):
        pass
    message = str(refused.value)
    assert "scim2-server is not installed" in message and "scripts/bootstrap" in message
    assert "\n" not in message
