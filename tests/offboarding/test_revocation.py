"""Plan steps with actions and cascades, end to end in the domain: plan → revoke → verify,
against a real slapd (a connector that deletes and lets refint cascade) and a real database."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from structlog.testing import capture_logs

from connectors.base import (
    DELETE,
    DISABLE,
    REMOVE,
    AccessGrant,
    Capabilities,
    Connector,
    Effect,
    KindCapability,
    Leaver,
    Message,
    OutcomeStatus,
    UnsupportedAction,
)
from connectors.ldap import ACCOUNT, GROUP, PASSWORD, LdapConfig, LdapConnector
from demo.directory import DemoOrg, LocalDirectory, seed_demo_org
from offboarding.domain.audit import events_for_case
from offboarding.domain.models import Case, RevocationStep, StepStatus
from offboarding.domain.plan import build_plan
from offboarding.domain.policy import Policy
from offboarding.domain.revocation import (
    REMOVED,
    load_plan,
    recorded_outcome,
    revoke_step,
    store_plan,
    verify_all,
)
from offboarding.wiring.db import create_schema, make_engine
from tests.connectors.deleting_ldap import DeletingLdapConnector

LEAVER = Leaver(employee_id="E1042", email="jdevries@example.test", display_name="Jan de Vries")


@dataclass
class Ports:
    engine: Engine
    connectors: Mapping[str, Connector]
    rules: Policy = field(default_factory=Policy)


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[LocalDirectory, DemoOrg]]:
    with LocalDirectory.start(tmp_path / "ldap", admin_password="admin-secret") as running:
        yield running, seed_demo_org(running, password="Welkom-2024!")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'offboarding.db'}")
    create_schema(engine)
    return engine


def open_case(engine: Engine) -> Case:
    case = Case(
        event_id="evt-cascade",
        employee_id=LEAVER.employee_id,
        employee_email=LEAVER.email,
        display_name=LEAVER.display_name,
        requested_by="E0007",
        last_working_day=date.today(),
        occurred_at=datetime.now(UTC),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(case)
        session.commit()
    return case


def test_cascaded_steps_are_planned_under_their_parent_skipped_and_still_verified(
    directory: tuple[LocalDirectory, DemoOrg], engine: Engine
) -> None:
    running, _ = directory
    config = LdapConfig.model_validate(running.connector_config())
    connector = DeletingLdapConnector(config)
    ports = Ports(engine, {"directory": connector}, Policy(on_leave={"directory": "delete"}))
    case = open_case(engine)
    record = store_plan(ports, case, LEAVER, connector.inventory(LEAVER))
    plan = load_plan(record)

    # the plan: the posixGroup membership on its own, then the account with what goes with it
    rows = plan.rows()
    account = next(s for s in plan.steps if s.grant.kind == ACCOUNT)
    assert [(r["kind"], r["action"], bool(r["parent"])) for r in rows][:2] == [
        (GROUP, REMOVE, False),
        (ACCOUNT, DELETE, False),
    ]
    children = rows[2:]
    assert children and all(r["parent"] == account.grant.key for r in children)
    assert {r["kind"] for r in children} == {PASSWORD, GROUP}
    assert all(r["parent_message"] == account.grant.label.model_dump() for r in children)

    # revoking: the children are recorded, not sent
    removed: set[str] = set()
    with capture_logs() as logs:
        for step in plan.steps:
            outcome = revoke_step(
                ports, case_id=case.id, plan_id=record.id, step=step, removed=frozenset(removed)
            )
            assert outcome.status in REMOVED
            assert outcome.status is (
                OutcomeStatus.CASCADED if step.cascaded else OutcomeStatus.REVOKED
            )
            removed.add(step.grant.key)
    sent = [e for e in logs if e["event"] == "grant revoked"]
    assert [(e["kind"], e["action"]) for e in sent] == [(GROUP, REMOVE), (ACCOUNT, DELETE)]
    assert len([e for e in logs if e["event"] == "grant cascaded"]) == len(children)

    with Session(engine) as session:
        stored = {s.grant_key: s for s in session.exec(select(RevocationStep))}
    for step in plan.steps[2:]:
        assert stored[step.grant.key].status is StepStatus.ALREADY_DONE
        assert recorded_outcome(step, stored[step.grant.key]).status is OutcomeStatus.CASCADED
    assert recorded_outcome(account, stored[account.grant.key]).status is OutcomeStatus.REVOKED
    steps_audited = [e for e in events_for_case(engine, case.id) if e.action == "revocation.step"]
    assert [e.outcome for e in steps_audited] == ["done", "done", *["cascaded"] * len(children)]

    # verification still looks at what cascaded: nothing is left, at the real server
    report = verify_all(ports, case.id, LEAVER)
    assert report.clean, report
    checks = [c.name.id for c in report.by_connector["directory"].checks]
    assert "deleting.check.no_dangling" in checks
    assert connector.inventory(LEAVER) == []


def test_a_cascaded_step_whose_parent_is_not_removed_is_revoked_on_its_own(
    directory: tuple[LocalDirectory, DemoOrg], engine: Engine
) -> None:
    running, _ = directory
    connector = DeletingLdapConnector(LdapConfig.model_validate(running.connector_config()))
    ports = Ports(engine, {"directory": connector}, Policy(on_leave={"directory": "delete"}))
    case = open_case(engine)
    record = store_plan(ports, case, LEAVER, connector.inventory(LEAVER))
    child = next(s for s in load_plan(record).steps if s.cascaded)
    outcome = revoke_step(ports, case_id=case.id, plan_id=record.id, step=child, removed=())
    assert outcome.status is OutcomeStatus.REVOKED  # sent: its parent failed or has not run


def test_a_policy_asking_what_the_connector_cannot_do_is_refused_when_planning(
    directory: tuple[LocalDirectory, DemoOrg], engine: Engine
) -> None:
    running, _ = directory
    connector = LdapConnector(LdapConfig.model_validate(running.connector_config()))
    ports = Ports(engine, {"directory": connector}, Policy(on_leave={"directory": "delete"}))
    with pytest.raises(UnsupportedAction, match=r'set \[policy.on_leave\] directory = "disable"'):
        store_plan(ports, open_case(engine), LEAVER, connector.inventory(LEAVER))
    plan = build_plan(
        case_id="c",
        leaver=LEAVER,
        grants=connector.inventory(LEAVER),
        capabilities={"directory": connector.capabilities},
    )
    assert {(s.grant.kind, s.action) for s in plan.steps} == {
        (ACCOUNT, DISABLE),
        (PASSWORD, REMOVE),
        (GROUP, REMOVE),
    }


def grant(kind: str, effect: Effect, parent: AccessGrant | None = None) -> AccessGrant:
    return AccessGrant(
        connector="app",
        kind=kind,
        effect=effect,
        system_id=f"id-{kind}",
        account="u1",
        target=kind,
        label=Message.of(f"app.{kind}", kind),
        cascades_from=parent.key if parent else None,
    )


def test_a_cascade_counts_only_for_the_parents_cascading_actions() -> None:
    account = grant("account", Effect.SIGN_IN)
    team = grant("team", Effect.MEMBERSHIP, account)
    repo = grant("repo", Effect.DATA, team)
    capabilities = Capabilities(
        (
            KindCapability("account", Effect.SIGN_IN, (DISABLE, DELETE), "", frozenset({DELETE})),
            KindCapability("team", Effect.MEMBERSHIP, (REMOVE,), "", frozenset({REMOVE})),
            KindCapability("repo", Effect.DATA, (REMOVE,)),
        )
    )

    def plan_with(on_leave: str) -> list[tuple[str, str, str | None]]:
        plan = build_plan(
            case_id="c",
            leaver=LEAVER,
            grants=[repo, team, account],
            policy=Policy(on_leave={"app": on_leave}),
            capabilities={"app": capabilities},
        )
        return [(s.grant.kind, s.action, s.cascades_from) for s in plan.steps]

    # disabling keeps the team: it is revoked on its own, and the repo goes with the team
    assert plan_with("disable") == [
        ("team", REMOVE, None),
        ("repo", REMOVE, team.key),
        ("account", DISABLE, None),
    ]
    # deleting the account takes the team and, through it, the repo along
    assert plan_with("delete") == [
        ("account", DELETE, None),
        ("team", REMOVE, account.key),
        ("repo", REMOVE, account.key),
    ]


def test_a_plan_stored_before_grants_had_effects_still_loads() -> None:
    from offboarding.domain.plan import RevocationPlan

    stored = {
        "case_id": "c",
        "leaver": LEAVER.model_dump(),
        "steps": [
            {
                "grant": {
                    "connector": "directory",
                    "kind": kind,
                    "account": "uid=jdevries,ou=people",
                    "target": target,
                    "label": label,
                },
                "phase": "revocation",
            }
            for kind, target, label in (
                ("membership", "cn=developers,ou=groups", "Member of cn=developers"),
                ("account", "uid=jdevries,ou=people", "Sign-in to directory account"),
            )
        ],
    }
    plan = RevocationPlan.model_validate(stored)
    assert [(s.grant.effect, s.action) for s in plan.steps] == [
        (Effect.MEMBERSHIP, REMOVE),
        (Effect.SIGN_IN, DISABLE),
    ]
    # the keys steps were recorded under before stay the same
    assert (
        plan.steps[0].grant.key
        == "directory|membership|uid=jdevries,ou=people|cn=developers,ou=groups"
    )
    assert plan.steps[1].grant.label.text == "Sign-in to directory account"
