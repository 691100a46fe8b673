"""What the approval side needs from the rest of the service, as small Protocols.

The service's `Services` (offboarding.wiring) satisfies them; approvals never import the
wiring, the orchestration or the flows.
"""

from __future__ import annotations

from typing import Any, Protocol

from approvals.rules import FourEyesPolicy
from approvals.tokens import DecisionSigner, LinkSigner
from offboarding.notification.ports import MailSettings, NotifyPorts


class ApprovalSettings(MailSettings, Protocol):
    @property
    def base_url(self) -> str:
        """Where the approval links point."""
        ...

    @property
    def approval_ttl_hours(self) -> int: ...


class ApprovalPorts(NotifyPorts, Protocol):
    @property
    def settings(self) -> ApprovalSettings: ...

    @property
    def links(self) -> LinkSigner: ...

    @property
    def decisions(self) -> DecisionSigner: ...

    @property
    def policy(self) -> FourEyesPolicy: ...


class RunResumer(Protocol):
    """Hands a recorded decision to the waiting run (Prefect, in the service)."""

    async def resume(
        self, flow_run_id: str, run_input: dict[str, Any], *, wait_seconds: float = ...
    ) -> bool: ...
