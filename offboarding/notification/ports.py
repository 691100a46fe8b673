"""What notification needs from the service, as small Protocols (the service's `Services`
satisfies them; tests may pass anything that does)."""

from __future__ import annotations

from typing import Protocol

import jinja2
from sqlalchemy.engine import Engine

from connectors.base import PeopleDirectory
from offboarding.notification.mail import Mailer


class MailSettings(Protocol):
    @property
    def default_language(self) -> str:
        """ "nl" or "en": for recipients whose language the directory does not know."""
        ...


class NotifyPorts(Protocol):
    @property
    def engine(self) -> Engine: ...

    @property
    def people(self) -> PeopleDirectory: ...

    @property
    def templates(self) -> jinja2.Environment: ...

    @property
    def mailer(self) -> Mailer: ...

    @property
    def settings(self) -> MailSettings: ...
