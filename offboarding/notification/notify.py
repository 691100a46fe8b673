"""Telling people how a case ended, and the evidence summary attached to the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from connectors.base import Outcome, Person
from offboarding.domain import audit
from offboarding.domain.cases import decisions_on, leaver_view
from offboarding.domain.models import Case, RevocationPlanRecord, utcnow
from offboarding.domain.plan import describe_outcome
from offboarding.domain.revocation import VerificationReport, check_rows
from offboarding.domain.text import markdown_escape
from offboarding.notification.mail import OutgoingEmail
from offboarding.notification.ports import NotifyPorts
from offboarding.notification.rendering import load_messages, pick_language
from offboarding.notification.rendering import render_email as render


def _person(services: NotifyPorts, employee_id: str) -> Person:
    found = services.people.find_person(employee_id)
    return found or Person(employee_id=employee_id, display_name=employee_id, email="")


def _send(
    services: NotifyPorts,
    case: Case,
    template: str,
    recipients: Sequence[Person],
    context: dict[str, Any],
) -> None:
    sent: set[str] = set()
    for person in recipients:
        if not person.email or person.email in sent:
            continue
        sent.add(person.email)
        language = pick_language(person.language, services.settings.default_language)
        rendered = render(
            services.templates,
            template,
            language,
            {**context, "recipient": {"display_name": person.display_name}},
        )
        message_id = services.mailer.send(
            OutgoingEmail(
                to=[person.email], subject=rendered.subject, text=rendered.text, html=rendered.html
            )
        )
        audit.record(
            services.engine,
            action=f"email.{template}",
            actor="service",
            case_id=case.id,
            details={"to": person.email, "message_id": message_id, "language": language},
            once_key=f"email:{template}:{case.id}:{person.email}",
        )


def _approver(services: NotifyPorts, case: Case, record: RevocationPlanRecord) -> Person | None:
    decisions = decisions_on(services.engine, case.id, record.plan_hash)
    return _person(services, decisions[-1].approver_id) if decisions else None


def _names(person: Person | None) -> dict[str, str]:
    if person is None:
        return {"display_name": "-", "employee_id": "-"}
    return {"display_name": person.display_name, "employee_id": person.employee_id}


def completed(
    services: NotifyPorts,
    case: Case,
    record: RevocationPlanRecord,
    outcomes: Sequence[Outcome],
    report: VerificationReport,
) -> None:
    requester = _person(services, case.requested_by)
    approver = _approver(services, case, record)
    _send(
        services,
        case,
        "case_completed",
        [requester, *([approver] if approver else [])],
        {
            "leaver": leaver_view(case),
            "case_id": case.id,
            "approver": _names(approver),
            "requester": _names(requester),
            "outcomes": [describe_outcome(o) for o in outcomes],
            "checks": _checks(report),
            "completed_at": utcnow().strftime("%Y-%m-%d %H:%M UTC"),
            "clean": report.clean,
        },
    )


def rejected(services: NotifyPorts, case: Case, record: RevocationPlanRecord) -> None:
    decisions = [
        d
        for d in decisions_on(services.engine, case.id, record.plan_hash)
        if d.decision == "reject"
    ]
    decision = decisions[-1] if decisions else None
    approver = _person(services, decision.approver_id) if decision else None
    _send(
        services,
        case,
        "case_rejected",
        [_person(services, case.requested_by), *([approver] if approver else [])],
        {
            "leaver": leaver_view(case),
            "case_id": case.id,
            "approver": _names(approver),
            "reason": decision.reason if decision else "",
            "decided_at": decision.decided_at.strftime("%Y-%m-%d %H:%M UTC") if decision else "-",
        },
    )


def needs_attention(
    services: NotifyPorts, case: Case, problem: str, *, done: list[str], not_done: list[str]
) -> None:
    """Mail the requester what stopped and what is left (the status change and its audit
    event are recorded by the caller, together)."""
    _send(
        services,
        case,
        "needs_attention",
        [_person(services, case.requested_by)],
        {
            "leaver": leaver_view(case),
            "case_id": case.id,
            "problem": problem,
            "done": done,
            "not_done": not_done,
        },
    )


def _checks(report: VerificationReport) -> list[dict[str, Any]]:
    """The checks per connector; their names and details are rendered per reader (`say`)."""
    return check_rows(report)


def evidence_markdown(
    services: NotifyPorts,
    case: Case,
    record: RevocationPlanRecord,
    outcomes: Sequence[Outcome],
    report: VerificationReport,
    failures: Sequence[str],
    *,
    attestations: Sequence[Mapping[str, str]] = (),
) -> str:
    """The evidence summary, in English and Dutch, for the run's artifact.

    The report templates are Markdown: every value they print is Markdown-escaped
    (``offboarding.notification.rendering.finalize``), names from the directory included.
    """
    approver = _approver(services, case, record)
    requester = _person(services, case.requested_by)
    context = {
        "case": {
            "id": case.id,
            "employee_id": case.employee_id,
            "display_name": case.display_name,
            "last_working_day": case.last_working_day.isoformat(),
            "urgent": case.urgent,
        },
        "requester": _names(requester),
        "approver": _names(approver),
        "plan_hash": record.plan_hash,
        "plan_version": record.version,
        "outcomes": [describe_outcome(o) for o in outcomes],
        "failures": list(failures),
        "remaining": [g.label for g in report.remaining],
        "checks": _checks(report),
        "clean": report.clean
        and not failures
        and all(row.get("attested_at") for row in attestations),
        "attestations": list(attestations),
        "generated_at": utcnow().strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    parts = [
        services.templates.get_template(f"reports/evidence.{lang}.md").render(
            **context, t=load_messages(services.templates, lang)
        )
        for lang in ("en", "nl")
    ]
    return "\n\n---\n\n".join(parts)


def artifact_description(
    kind: Literal["plan", "evidence"], case: Case, record: RevocationPlanRecord | None = None
) -> str:
    """The description of the run's ``plan`` or ``evidence`` artifact (shown as Markdown).

    The leaver's id and name are Markdown-escaped and freed of invisible controls; the
    ``plan`` description needs the plan ``record``.
    """
    who = f"{markdown_escape(case.employee_id)} ({markdown_escape(case.display_name)})"
    if kind == "evidence":
        return f"Evidence for {who}"
    if kind == "plan":
        if record is None:
            raise ValueError("the plan artifact's description needs the plan record")
        return f"Revocation plan v{record.version} for {who}; SHA-256 {record.plan_hash}"
    raise ValueError(f"no artifact kind {kind!r}: use 'plan' or 'evidence'")
