"""The evidence pack, checked against the audit log of a case built end to end in the domain:
a real slapd (the demo organisation), a real database (SQLite and PostgreSQL), the plan,
decisions, steps, attestation and verification recorded as the flow records them."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markupsafe import escape
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from approvals.attestations import attest
from connectors.base import (
    KEEP,
    MANUAL,
    AccessGrant,
    Capabilities,
    Connector,
    Effect,
    Health,
    KindCapability,
    Leaver,
    Message,
    Outcome,
    Verification,
)
from connectors.ldap import LdapConfig, LdapConnector
from connectors.manual import ManualStep, ManualSteps
from demo.directory import LocalDirectory
from demo.organisation import DemoOrg, seed_demo_org
from offboarding.domain import audit
from offboarding.domain.audit import events_for_case
from offboarding.domain.cases import Recorded, set_plan_status, set_status
from offboarding.domain.models import (
    ApprovalDecision,
    ApprovalRequest,
    Attestation,
    AuditEvent,
    Case,
    CaseStatus,
    Decision,
    PlanStatus,
    RevocationPlanRecord,
    StepStatus,
    utcnow,
)
from offboarding.domain.policy import Policy
from offboarding.domain.retention import apply_retention
from offboarding.domain.revocation import (
    REMOVED,
    inventory_all,
    load_plan,
    record_step,
    revoke_step,
    store_plan,
    verify_all,
)
from offboarding.evidence.pack import CaseNotFinished, UnknownCase, gather
from offboarding.evidence.render import Format, messages, render, render_text
from offboarding.evidence.rows import when
from offboarding.notification.rendering import template_env

APPROVER = "E1004"  # Lars Smit, a manager who is neither the requester nor the leaver
LAPTOP = ManualStep(
    id="laptop",
    text="Collect the laptop and the door badge",
    text_nl="Laptop en toegangspas innemen",
    assignee="E1001",
)
NAME = 'Jan <script>alert("x")</script> de Vries'  # as HR sent it: escaped everywhere
REMARK = "Laptop received; badge <b>destroyed</b>"


class ArchivedMailbox:
    """A system whose only grant the plan keeps on purpose (action keep): it is reported,
    never sent, so no peer is needed."""

    name = "mail"
    capabilities = Capabilities(
        (KindCapability("mailbox", Effect.DATA, (KEEP,), "kept 30 days for the archive"),)
    )

    def check(self) -> Health:
        return Health(ok=True)

    def inventory(self, leaver: Leaver) -> list[AccessGrant]:
        return [
            AccessGrant(
                connector=self.name,
                kind="mailbox",
                effect=Effect.DATA,
                system_id=f"mbx-{leaver.employee_id}",
                account=leaver.email,
                target=leaver.email,
                label=Message.plain("Mailbox kept 30 days for the archive"),
            )
        ]

    def revoke(self, grant: AccessGrant, action: str | None = None) -> Outcome:
        raise AssertionError("a kept grant is never sent")

    def verify(self, leaver: Leaver) -> Verification:
        return Verification()


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
def ports(engine: Engine, directory: tuple[LocalDirectory, DemoOrg]) -> Ports:
    running, org = directory
    config = LdapConfig.model_validate(
        running.connector_config(managers_group=org.managers_group_dn)
    )
    return Ports(
        engine,
        {
            "directory": LdapConnector(config),
            "manual": ManualSteps((LAPTOP,)),
            "mail": ArchivedMailbox(),  # type: ignore[dict-item]
        },
        Policy(manual_steps=(LAPTOP,)),
    )


def open_case(engine: Engine, org: DemoOrg, event_id: str) -> Case:
    """As the intake opens a case: the row and its `case.opened` event together."""
    case = Case(
        id=f"case{event_id.replace('-', '')}",
        event_id=event_id,
        employee_id=org.leaver_id,
        employee_email=org.leaver_email,
        display_name=NAME,
        requested_by=org.requester_id,
        last_working_day=date.today(),
        occurred_at=datetime.now(UTC) - timedelta(minutes=5),
    )

    def store(session: Session) -> Case:
        session.add(case)
        session.flush()
        audit.append(
            session,
            action="case.opened",
            actor=f"hris:{org.requester_id}",
            case_id=case.id,
            details={"event_id": event_id, "employee_id": case.employee_id, "urgent": False},
        )
        return case

    return audit.in_transaction(engine, store)


def leaver(case: Case) -> Leaver:
    return Leaver(
        employee_id=case.employee_id, email=case.employee_email, display_name="Jan de Vries"
    )


def decide(
    engine: Engine, case: Case, record: RevocationPlanRecord, decision: Decision, reason: str
) -> ApprovalDecision:
    """As the approval page does: the link used, the decision and its event, at once."""
    request = ApprovalRequest(
        case_id=case.id,
        plan_id=record.id,
        plan_hash=record.plan_hash,
        approver_id=APPROVER,
        approver_email="lsmit@example.test",
        expires_at=utcnow() + timedelta(hours=72),
    )

    def claim(session: Session) -> ApprovalDecision:
        request.used_at = utcnow()
        session.add(request)
        session.flush()
        stored = ApprovalDecision(
            case_id=case.id,
            request_id=request.id,
            plan_hash=record.plan_hash,
            approver_id=APPROVER,
            decision=decision,
            reason=reason,
        )
        session.add(stored)
        audit.append(
            session,
            action="decision.recorded",
            actor=f"employee:{APPROVER}",
            outcome=decision.value,
            case_id=case.id,
            details={"decision_id": stored.id, "plan_hash": record.plan_hash, "reason": reason},
        )
        return stored

    return audit.in_transaction(engine, claim)


def refuse_requester(engine: Engine, case: Case) -> None:
    """The requester tried to approve their own request: refused by the approval page."""
    audit.record(
        engine,
        action="decision.refused",
        actor=f"employee:{case.requested_by}",
        outcome="refused",
        case_id=case.id,
        details={"request_id": "forwarded-link", "refusals": ["requester"], "by": "approval page"},
    )


def request_attestation(engine: Engine, case: Case, record: RevocationPlanRecord) -> Attestation:
    """As `approvals.attestations` creates one: the row and `attestation.requested`."""
    step = next(s for s in load_plan(record).steps if s.action == MANUAL)
    row = Attestation(
        case_id=case.id,
        plan_id=record.id,
        plan_hash=record.plan_hash,
        grant_key=step.grant.key,
        label=step.grant.label.text,
        assignee_id=LAPTOP.assignee,
        assignee_email="sjansen@example.test",
        due_at=utcnow() + timedelta(hours=48),
    )

    def store(session: Session) -> Attestation:
        session.add(row)
        audit.append(
            session,
            action="attestation.requested",
            actor="service",
            case_id=case.id,
            details={"attestation_id": row.id, "step": step.grant.key, "assignee_id": "E1001"},
        )
        return row

    return audit.in_transaction(engine, store)


def completed_case(ports: Ports, org: DemoOrg) -> tuple[Case, RevocationPlanRecord]:
    """inventory → plan → refused attempt → approval → revoke → verify → attest → completed,
    recorded the way flows/offboard_leaver.py records it."""
    engine = ports.engine
    case = open_case(engine, org, "evt-2026-0042")
    record = store_plan(ports, case, leaver(case), inventory_all(ports, leaver(case)))
    set_status(engine, case.id, CaseStatus.AWAITING_APPROVAL)
    refuse_requester(engine, case)
    decide(engine, case, record, Decision.APPROVE, "Handover done; go ahead")
    set_plan_status(engine, record.id, PlanStatus.APPROVED)
    set_status(engine, case.id, CaseStatus.REVOKING)
    attestation = request_attestation(engine, case, record)
    removed: set[str] = set()
    for step in load_plan(record).steps:
        if step.action == MANUAL:
            continue
        outcome = revoke_step(
            ports, case_id=case.id, plan_id=record.id, step=step, removed=frozenset(removed)
        )
        if outcome.status in REMOVED:
            removed.add(step.grant.key)
    report = verify_all(ports, case.id, leaver(case))
    assert report.clean, report
    attest(ports, attestation.id, remark=REMARK)
    set_status(engine, case.id, CaseStatus.COMPLETED, event=Recorded("case.completed"))
    return case, record


def section(html: str, name: str) -> str:
    """The part of the page under `<h2 id="name">`, up to the next section."""
    found = re.search(rf'<h2 id="{name}">(.*?)(?=<h2 id=|</body>)', html, re.S)
    assert found, f"no section {name}"
    return found.group(1)


def cited(part: str, seq: int) -> str:
    """The row (or verification heading) of a section that cites audit event `seq`."""
    mark = f'<span class="seq">#{seq}</span>'
    rows = [r for r in re.findall(r"<(?:tr|h3)>.*?</(?:tr|h3)>", part, re.S) if mark in r]
    assert len(rows) == 1, f"event #{seq} cited {len(rows)} times"
    return rows[0]


def escaped(text: str) -> str:
    """As the page's HTML autoescape writes it."""
    return str(escape(text))


SECTION_OF = {
    "decision.recorded": "decisions",
    "decision.refused": "refusals",
    "revocation.step": "steps",
    "manual_step.attested": "attestations",
    "verification": "verification",
}


def test_a_completed_case_pack_shows_every_recorded_event_of_the_audit_log(
    ports: Ports, directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    case, record = completed_case(ports, directory[1])
    events = events_for_case(ports.engine, case.id)
    pack = gather(ports.engine, case.id)
    html = render_text(pack, "en")
    words = messages(template_env(), "en")

    # every decision, refusal, step, attestation and verification: its row, time and actor
    counted = {name: 0 for name in SECTION_OF}
    for event in events:
        if event.action not in SECTION_OF:
            continue
        counted[event.action] += 1
        row = cited(section(html, SECTION_OF[event.action]), event.seq)
        assert when(event.at) in row
        if event.action != "verification":
            assert escaped(event.actor) in row, (event.action, row)
        if event.action == "revocation.step":
            assert f"<td>{words[f'evidence.outcome.{event.outcome}']}</td>" in row
            assert escaped(json.loads(event.details)["detail"]) in row
    assert counted["revocation.step"] >= 5  # four LDAP groups, the account..., the mailbox
    assert all(counted.values()), counted
    assert "Handover done; go ahead" in cited(section(html, "decisions"), pack.decisions[0].seq)  # type: ignore[arg-type]
    assert "requester" in section(html, "refusals")
    attested = section(html, "attestations")
    assert "Collect the laptop and the door badge" in attested
    assert escaped(REMARK) in attested and REMARK not in attested

    # the plan: its hash as stored, recomputed, and the decision names it
    assert [p.plan_hash for p in pack.plans] == [record.plan_hash]
    assert pack.plans[0].hash_verified and pack.plans[0].status == "approved"
    assert record.plan_hash in section(html, "plans")
    assert [d.plan_hash for d in pack.decisions] == [record.plan_hash]

    # what was kept on purpose, with the step's recorded detail
    kept = section(html, "kept")
    assert "kept: Mailbox kept 30 days for the archive" in kept

    # the anchor: the case's last event, and the chain's head at generation
    with Session(ports.engine) as session:
        head = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc())).first()
    assert head is not None
    assert (pack.anchor.case_seq, pack.anchor.case_hash) == (events[-1].seq, events[-1].hash)
    assert (pack.anchor.head_seq, pack.anchor.head_hash) == (head.seq, head.hash)
    assert pack.anchor.chain_verified
    assert f'id="anchor-case-hash">{events[-1].hash}<' in html
    assert events[-1].action == "case.completed" and pack.final["status"] == "completed"

    # the trigger, the leaver's name escaped, nothing loaded from outside
    assert "evt-2026-0042" in section(html, "trigger")
    assert "<script" not in html and escaped(NAME) in html
    assert not re.search(r"<link|src=|url\(|@import", html)


def test_the_pack_reads_in_dutch_and_as_a_pdf_and_markdown(
    ports: Ports, directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    case, record = completed_case(ports, directory[1])
    pack = gather(ports.engine, case.id)
    english, dutch = render_text(pack, "en"), render_text(pack, "nl")
    assert "Besluiten (vier-ogenprincipe)" in dutch and "Four-eyes decisions" not in dutch
    assert "Laptop en toegangspas innemen" in section(dutch, "attestations")
    assert "Four-eyes decisions" in english and "Besluiten" not in english
    assert "goedgekeurd" in section(dutch, "decisions")

    pdf = render(pack, "nl", Format.PDF)
    assert pdf.startswith(b"%PDF-")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    flat = re.sub(r"\s+", "", text)
    assert case.id in flat and record.plan_hash in flat
    assert "Bewijsuitdiensttreding" in flat

    markdown = render(pack, "en", Format.MD).decode()
    shown = MarkdownIt("commonmark").enable("table").render(markdown)
    for event in events_for_case(ports.engine, case.id):
        assert when(event.at) in shown and event.actor in shown
    assert record.plan_hash in shown and "<script" not in shown


def test_a_rejected_case_shows_the_decision_its_reason_and_refused_hr_events(
    engine: Engine, directory: tuple[LocalDirectory, DemoOrg], ports: Ports
) -> None:
    org = directory[1]
    # the first copy of the HR event was refused, the corrected one opened the case
    audit.record(
        engine,
        action="intake.refused",
        actor="hris",
        outcome="malformed",
        details={"event_id": "evt-2026-0077", "status": 422},
    )
    case = open_case(engine, org, "evt-2026-0077")
    record = store_plan(ports, case, leaver(case), inventory_all(ports, leaver(case)))
    reason = "Not yet: <b>handover</b> first"
    decide(engine, case, record, Decision.REJECT, reason)
    set_status(
        engine,
        case.id,
        CaseStatus.REJECTED,
        "rejected by second manager",
        plan=(record.id, PlanStatus.REJECTED),
        event=Recorded(
            "case.rejected",
            actor=f"employee:{APPROVER}",
            outcome="rejected",
            details={"reason": reason},
        ),
    )
    pack = gather(engine, case.id)
    html = render_text(pack, "nl")
    assert [(d.decision, d.reason) for d in pack.decisions] == [("reject", reason)]
    assert "afgewezen" in section(html, "decisions") and escaped(reason) in html
    assert pack.steps == [] and "Geen." in section(html, "steps")
    refused = [e for e in pack.refusals if e.action == "intake.refused"]
    assert len(refused) == 1 and "HR-melding geweigerd" in section(html, "refusals")
    assert pack.final["status"] == "rejected" and pack.final["actor"] == f"employee:{APPROVER}"
    assert pack.plans[0].status == "rejected"
    last = events_for_case(engine, case.id)[-1]
    assert last.action == "case.rejected" and pack.anchor.case_hash == last.hash

    # a plan changed in the database after the fact no longer matches its fingerprint
    with Session(engine) as session:
        stored = session.get(RevocationPlanRecord, record.id)
        assert stored is not None
        stored.canonical = stored.canonical.replace("legacy-ftp", "legacy-ftq")
        session.add(stored)
        session.commit()
    tampered = gather(engine, case.id)
    assert not tampered.plans[0].hash_verified
    assert "DOES NOT MATCH" in render_text(tampered, "en")


def test_open_and_unknown_cases_get_no_pack(
    engine: Engine, directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    case = open_case(engine, directory[1], "evt-2026-0099")
    with pytest.raises(CaseNotFinished, match=rf"case {case.id} is received"):
        gather(engine, case.id)
    with pytest.raises(UnknownCase, match="No case nope"):
        gather(engine, "nope")


def test_the_cli_writes_the_pack_and_says_plainly_why_it_cannot(
    ports: Ports,
    directory: tuple[LocalDirectory, DemoOrg],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from offboarding.cli import app
    from offboarding.cli import evidence as _registers_the_command  # noqa: F401

    case, record = completed_case(ports, directory[1])
    waiting = open_case(ports.engine, directory[1], "evt-2026-0100")
    monkeypatch.chdir(tmp_path)
    env = {"OFFBOARDING_HOME": str(tmp_path / "home"), "OFFBOARDING_DATABASE_URL": database_url}
    runner = CliRunner()

    result = runner.invoke(app, ["evidence", case.id, "--lang", "nl"], env=env)
    assert result.exit_code == 0, result.output
    written = tmp_path / f"evidence-{case.id}.nl.html"
    assert f"Wrote {written.name}" in result.output
    assert (
        record.plan_hash in written.read_text() and "Bewijs uitdiensttreding" in written.read_text()
    )

    pdf = tmp_path / "pack.pdf"
    result = runner.invoke(
        app, ["evidence", case.id, "--format", "pdf", "--out", str(pdf)], env=env
    )
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF-")

    result = runner.invoke(app, ["evidence", case.id, "--format", "md", "--out", "-"], env=env)
    assert result.exit_code == 0 and "# Offboarding evidence" in result.output

    result = runner.invoke(app, ["evidence", waiting.id], env=env)
    assert result.exit_code == 1
    assert f"case {waiting.id} is received" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evidence", "no-such-case"], env=env)
    assert result.exit_code == 1 and "No case no-such-case" in result.output
    result = runner.invoke(
        app, ["evidence", case.id, "--out", str(tmp_path / "no" / "x.html")], env=env
    )
    assert result.exit_code == 1 and "Could not write" in result.output


def test_the_report_catalogs_say_the_same_things_in_both_languages() -> None:
    env = template_env()
    english, dutch = messages(env, "en"), messages(env, "nl")
    ours = {key for key in english if key.startswith("evidence.")}
    assert ours and ours == {key for key in dutch if key.startswith("evidence.")}
    assert all(english[key].strip() and dutch[key].strip() for key in ours)


def test_after_retention_the_pack_keeps_what_proves_the_offboarding(
    ports: Ports, directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    case, record = completed_case(ports, directory[1])
    apply_retention(ports.engine, retention_days=1, now=utcnow() + timedelta(days=2))
    pack = gather(ports.engine, case.id)
    html = render_text(pack, "nl")
    assert pack.case["display_name"] == "[erased]" and "Jan" not in html
    assert pack.plans[0].erased and record.plan_hash in section(html, "plans")
    assert "gewist volgens het bewaarbeleid" in section(html, "plans")
    events = events_for_case(ports.engine, case.id)
    for event in (e for e in events if e.action in SECTION_OF):
        row = cited(section(html, SECTION_OF[event.action]), event.seq)
        assert when(event.at) in row
    assert pack.anchor.case_hash == events[-1].hash and pack.anchor.chain_verified


def test_a_case_that_needs_attention_shows_the_failed_step_and_the_problem(
    ports: Ports, directory: tuple[LocalDirectory, DemoOrg]
) -> None:
    engine = ports.engine
    case = open_case(engine, directory[1], "evt-2026-0123")
    record = store_plan(ports, case, leaver(case), inventory_all(ports, leaver(case)))
    decide(engine, case, record, Decision.APPROVE, "")
    step = load_plan(record).steps[0]
    record_step(
        ports,
        case_id=case.id,
        plan_id=record.id,
        grant=step.grant,
        status=StepStatus.FAILED,
        detail="LDAPSocketOpenError: socket connection error",
    )
    problem = f"{step.grant.label.text}: LDAPSocketOpenError: socket connection error"
    set_status(
        engine,
        case.id,
        CaseStatus.NEEDS_ATTENTION,
        problem,
        event=Recorded(
            "case.needs_attention",
            outcome="needs_attention",
            details={"problem": problem, "done": [], "not_done": [problem]},
        ),
    )
    pack = gather(engine, case.id)
    html = render_text(pack, "en")
    failed = cited(section(html, "steps"), pack.steps[0].seq)
    assert "FAILED" in failed and "LDAPSocketOpenError" in failed
    assert pack.final == {**pack.final, "status": "needs_attention", "reason": problem}
    assert "needs attention" in section(html, "final") and escaped(problem) in html
