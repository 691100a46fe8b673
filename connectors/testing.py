"""The conformance suite every connector passes, against its real or spec-faithful peer.

Subclass `ConnectorConformance` in a test module (its name must start with
`Test`) and provide three function-scoped fixtures:

- `connector`: the connector under test, able to write;
- `dry_run_connector`: the same connector built with `dry_run=True`;
- `leaver`: a `Leaver` who, at the start of each test, holds access in that system.

Optionally override `unknown_leaver` with someone the system has never heard of.

    class TestLdapConformance(ConnectorConformance):
        @pytest.fixture
        def connector(self, directory): ...

The tests only use the `Connector` protocol, so what they prove holds for the
flows that use it: inventory finds the access, revoke removes it, revoking twice
is harmless, verify is clean afterwards, and a dry run writes nothing.
"""

from __future__ import annotations

import pytest

from connectors.base import AccessGrant, Connector, Leaver, OutcomeStatus


def _describe(grants: list[AccessGrant]) -> str:
    return "\n".join(f"  {g.kind.value}: {g.label} ({g.target})" for g in grants) or "  (none)"


class ConnectorConformance:
    """Behaviour every connector must show; see the module docstring for the fixtures to provide."""

    @pytest.fixture
    def connector(self) -> Connector:
        raise NotImplementedError("provide a `connector` fixture: the connector under test")

    @pytest.fixture
    def dry_run_connector(self) -> Connector:
        raise NotImplementedError(
            "provide a `dry_run_connector` fixture: the connector built with dry_run=True"
        )

    @pytest.fixture
    def leaver(self) -> Leaver:
        raise NotImplementedError(
            "provide a `leaver` fixture: a person who holds access in the system"
        )

    @pytest.fixture
    def unknown_leaver(self) -> Leaver:
        return Leaver(
            employee_id="X-conformance-nobody-0000",
            email="conformance-nobody-0000@nowhere.invalid",
            display_name="Nobody Known",
        )

    def revoke_everything(self, connector: Connector, leaver: Leaver) -> list[AccessGrant]:
        grants = connector.inventory(leaver)
        for grant in grants:
            outcome = connector.revoke(grant)
            assert outcome.status is OutcomeStatus.REVOKED, (
                f"{grant.label}: {outcome.status} {outcome.detail}"
            )
        return grants

    # -- the tests -----------------------------------------------------------------

    def test_connector_fits_the_protocol(self, connector: Connector) -> None:
        assert isinstance(connector, Connector)
        assert connector.name

    def test_check_reports_healthy(self, connector: Connector) -> None:
        health = connector.check()
        assert health.ok, health.messages

    def test_inventory_finds_access(self, connector: Connector, leaver: Leaver) -> None:
        grants = connector.inventory(leaver)
        assert grants, f"{leaver.employee_id} should hold access"
        assert all(g.connector == connector.name for g in grants)
        assert len({g.key for g in grants}) == len(grants), "grant keys must be unique"
        assert connector.inventory(leaver) == grants, "inventory must be deterministic"

    def test_revoke_removes_access(self, connector: Connector, leaver: Leaver) -> None:
        self.revoke_everything(connector, leaver)
        remaining = connector.inventory(leaver)
        assert remaining == [], f"still present after revoke:\n{_describe(remaining)}"

    def test_revoke_twice_is_harmless(self, connector: Connector, leaver: Leaver) -> None:
        grants = self.revoke_everything(connector, leaver)
        for grant in grants:
            outcome = connector.revoke(grant)
            assert outcome.status is OutcomeStatus.ALREADY_DONE, (
                f"{grant.label}: {outcome.status} {outcome.detail}"
            )

    def test_verify_is_clean_after_revoke(self, connector: Connector, leaver: Leaver) -> None:
        self.revoke_everything(connector, leaver)
        verification = connector.verify(leaver)
        failed = [f"{c.name}: {c.detail}" for c in verification.checks if not c.passed]
        assert verification.remaining == [], _describe(verification.remaining)
        assert not failed, failed
        assert verification.clean

    def test_verify_before_revoke_is_not_clean(self, connector: Connector, leaver: Leaver) -> None:
        verification = connector.verify(leaver)
        assert verification.remaining
        assert not verification.clean

    def test_dry_run_writes_nothing(
        self, connector: Connector, dry_run_connector: Connector, leaver: Leaver
    ) -> None:
        before = connector.inventory(leaver)
        assert dry_run_connector.inventory(leaver) == before
        for grant in before:
            outcome = dry_run_connector.revoke(grant)
            assert outcome.status is OutcomeStatus.DRY_RUN, (
                f"{grant.label}: {outcome.status} {outcome.detail}"
            )
        dry_run_connector.verify(leaver)
        assert connector.inventory(leaver) == before

    def test_unknown_person_has_no_access(
        self, connector: Connector, unknown_leaver: Leaver
    ) -> None:
        assert connector.inventory(unknown_leaver) == []
        verification = connector.verify(unknown_leaver)
        assert verification.remaining == []
        assert verification.clean
