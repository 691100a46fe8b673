"""Everything a request handler or a flow run needs, built once from settings and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import jinja2
from sqlalchemy.engine import Engine

from approvals.attestations import LINK_DAYS
from approvals.deputies import DeputyLinkSigner
from approvals.rules import FourEyesPolicy
from approvals.tokens import AttestationSigner, DecisionSigner, LinkSigner
from connectors import manual
from connectors.base import Connector, PeopleDirectory
from connectors.registry import build_connector, build_people_directory
from offboarding.domain.policy import Policy
from offboarding.notification.mail import Mailer, OutboxMailer, SmtpMailer
from offboarding.notification.rendering import shared_templates
from offboarding.wiring.db import create_schema, make_engine
from offboarding.wiring.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: Engine
    people: PeopleDirectory
    connectors: dict[str, Connector]
    mailer: Mailer
    templates: jinja2.Environment
    links: LinkSigner
    decisions: DecisionSigner
    attestations: AttestationSigner
    policy: FourEyesPolicy = field(default_factory=FourEyesPolicy)
    deputy_links: DeputyLinkSigner | None = None  # the pages where a manager names a deputy

    @property
    def rules(self) -> Policy:
        """The organisation's policy (containment, approvals, order, disable or delete)."""
        return self.settings.policy

    @property
    def uses_outbox(self) -> bool:
        return isinstance(self.mailer, OutboxMailer)


def build_mailer(settings: Settings) -> Mailer:
    if settings.smtp is None:
        return OutboxMailer(settings.outbox_dir, sender=settings.sender)
    return SmtpMailer(
        host=settings.smtp.host,
        port=settings.smtp.port,
        sender=settings.sender,
        starttls=settings.smtp.starttls,
        username=settings.smtp.username,
        password=settings.smtp.password,
    )


def build_services(
    settings: Settings, *, engine: Engine | None = None, migrate: bool = True
) -> Services:
    """Everything built from settings. `migrate` brings the database to the newest schema
    first; flow runs skip it (the service migrates once when it starts)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    if engine is None:
        engine = make_engine(settings.resolved_database_url, pool_size=settings.db_concurrency)
        if migrate:
            create_schema(engine)
    if not settings.connectors:
        raise ValueError(
            "no connectors are configured: add a [[connectors]] table to "
            f"{settings.home / 'config.toml'} (see README) or run `offboarding demo`"
        )
    connectors = {config["name"]: build_connector(config) for config in settings.connectors}
    if settings.policy.manual_steps:
        if manual.NAME in connectors:
            raise ValueError(
                f"a connector is named {manual.NAME!r}, the name of the work instruction's "
                "manual steps ([policy] manual_steps): rename the connector"
            )
        connectors[manual.NAME] = manual.ManualSteps(settings.policy.manual_steps)
    key = settings.signing_key.get_secret_value()
    return Services(
        settings=settings,
        engine=engine,
        people=build_people_directory(settings.connector_config(settings.people.connector)),
        connectors=connectors,
        mailer=build_mailer(settings),
        templates=shared_templates(),
        links=LinkSigner(key, ttl=timedelta(hours=settings.approval_ttl_hours)),
        decisions=DecisionSigner(key),
        attestations=AttestationSigner(key, ttl=timedelta(days=LINK_DAYS)),
        policy=FourEyesPolicy.from_policy(settings.policy),
        deputy_links=DeputyLinkSigner(key),
    )
