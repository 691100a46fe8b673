"""The conformance suite every connector passes, against its real or spec-faithful peer.

Subclass `ConnectorConformance` in a test module (its name must start with `Test`) and
provide four function-scoped fixtures:

- `connector`: the connector under test, able to write;
- `dry_run_connector`: the same connector built with `dry_run=True`;
- `leaver`: a `Leaver` who, at the start of each test, holds access in that system;
- `peer_state`: a function that reads everything the connector could change at the peer,
  as a comparable value (the entries of a directory, the users and groups of a SCIM
  server), read without the connector: "writes nothing" is asserted on it.

Optional:

- `unknown_leaver`: someone the system has never heard of (a made-up person by default);
- `throttle_once`: for connectors over HTTP, a function `throttle_once(seconds)` that makes
  the peer answer the next request with 429 and `Retry-After: seconds`, once. The
  retry-after test is skipped without it (LDAP has no such thing);
- `expects_cascades`: True for a connector whose grants declare `cascades_from` (e.g. a
  team membership that goes with the organisation membership); the cascade tests then
  fail when no grant declares one, and run whenever one does.

    class TestLdapConformance(ConnectorConformance):
        @pytest.fixture
        def connector(self, directory): ...

The tests only use the `Connector` protocol, so what they prove holds for the flows that
use it: inventory finds the access and describes it, revoke removes it, revoking twice is
harmless, verify is clean afterwards, a dry run, `check()` and an unsupported action write
nothing, the server's Retry-After is honoured, and cascaded grants go with their parent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.base import (
    NOT_SENT,
    AccessGrant,
    Connector,
    Effect,
    Leaver,
    Message,
    OutcomeStatus,
    UnsupportedAction,
)

# The order the service's default policy takes a system's access away in.
_EFFECT_ORDER = [Effect.MEMBERSHIP, Effect.DATA, Effect.CREDENTIAL, Effect.SIGN_IN, Effect.SESSION]


def _describe(grants: list[AccessGrant]) -> str:
    return "\n".join(f"  {g.kind}: {g.label} ({g.target})" for g in grants) or "  (none)"


def in_plan_order(grants: list[AccessGrant]) -> list[AccessGrant]:
    return sorted(grants, key=lambda g: _EFFECT_ORDER.index(g.effect))


def sent(connector: Connector, grants: list[AccessGrant]) -> list[AccessGrant]:
    """The grants whose default action the service sends to the connector (not the ones it
    keeps, leaves to a person, or leaves to another system)."""
    return [g for g in grants if _default_action(connector, g) not in NOT_SENT]


def _default_action(connector: Connector, grant: AccessGrant) -> str:
    capability = connector.capabilities.of(grant.kind)
    assert capability is not None, f"kind {grant.kind!r} is not in the capabilities"
    return capability.default_action


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
    def peer_state(self) -> Callable[[], Any]:
        raise NotImplementedError(
            "provide a `peer_state` fixture: a function reading, without the connector, "
            "everything the connector could change at the peer"
        )

    @pytest.fixture
    def unknown_leaver(self) -> Leaver:
        return Leaver(
            employee_id="X-conformance-nobody-0000",
            email="conformance-nobody-0000@nowhere.invalid",
            display_name="Nobody Known",
        )

    @pytest.fixture
    def throttle_once(self) -> Callable[[int], None]:
        pytest.skip("the peer cannot be told to answer 429 with Retry-After (not HTTP)")

    @pytest.fixture
    def expects_cascades(self) -> bool:
        return False

    def revoke_everything(self, connector: Connector, leaver: Leaver) -> list[AccessGrant]:
        """Every grant the service sends, with its default action, in the order a plan takes
        them."""
        grants = in_plan_order(sent(connector, connector.inventory(leaver)))
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
        kinds = connector.capabilities.kinds
        assert kinds, "declare the kinds of grant the connector lists"
        assert len({k.kind for k in kinds}) == len(kinds), "each kind once"
        for kind in kinds:
            assert kind.actions, f"kind {kind.kind!r} declares no action"
            assert kind.cascade_actions <= set(kind.actions), kind.kind

    def test_check_reports_healthy(self, connector: Connector) -> None:
        health = connector.check()
        assert health.ok, health.messages

    def test_check_writes_nothing(
        self,
        connector: Connector,
        dry_run_connector: Connector,
        peer_state: Callable[[], Any],
    ) -> None:
        before = peer_state()
        connector.check()
        dry_run_connector.check()
        assert peer_state() == before

    def test_inventory_finds_access(self, connector: Connector, leaver: Leaver) -> None:
        grants = connector.inventory(leaver)
        assert grants, f"{leaver.employee_id} should hold access"
        assert all(g.connector == connector.name for g in grants)
        keys = [g.key for g in grants]
        assert len(set(keys)) == len(grants), "grant keys must be unique"
        again = connector.inventory(leaver)
        assert again == grants, "inventory must be deterministic"
        assert [g.key for g in again] == keys, "grant keys must be stable"

    def test_every_grant_is_described(self, connector: Connector, leaver: Leaver) -> None:
        grants = connector.inventory(leaver)
        keys = {g.key for g in grants}
        for grant in grants:
            assert isinstance(grant.effect, Effect), grant
            assert grant.system_id and grant.account and grant.target, grant
            assert isinstance(grant.label, Message) and grant.label.id, grant
            assert grant.label.text and "%(" not in grant.label.text, grant.label
            capability = connector.capabilities.of(grant.kind)
            assert capability is not None, f"kind {grant.kind!r} is not in the capabilities"
            assert capability.effect is grant.effect, grant
            assert grant.cascades_from is None or grant.cascades_from in keys, (
                f"{grant.key} cascades from {grant.cascades_from}, which is not in the inventory"
            )

    def test_revoke_removes_access(self, connector: Connector, leaver: Leaver) -> None:
        reported = [g for g in connector.inventory(leaver) if g not in sent(connector, [g])]
        self.revoke_everything(connector, leaver)
        remaining = sent(connector, connector.inventory(leaver))
        assert remaining == [], f"still present after revoke:\n{_describe(remaining)}"
        left = connector.inventory(leaver)
        assert all(g in reported for g in left), "only what is kept or left to others remains"

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
        assert all(isinstance(c.name, Message) and c.name.id for c in verification.checks)

    def test_verify_before_revoke_is_not_clean(self, connector: Connector, leaver: Leaver) -> None:
        verification = connector.verify(leaver)
        assert verification.remaining
        assert not verification.clean
        assert not [g for g in verification.remaining if g not in sent(connector, [g])], (
            "verification must not count what the plan keeps or leaves to a person"
        )

    def test_dry_run_writes_nothing(
        self,
        connector: Connector,
        dry_run_connector: Connector,
        leaver: Leaver,
        peer_state: Callable[[], Any],
    ) -> None:
        state = peer_state()
        before = connector.inventory(leaver)
        assert dry_run_connector.inventory(leaver) == before
        for grant in in_plan_order(sent(connector, before)):
            outcome = dry_run_connector.revoke(grant)
            assert outcome.status is OutcomeStatus.DRY_RUN, (
                f"{grant.label}: {outcome.status} {outcome.detail}"
            )
        dry_run_connector.verify(leaver)
        dry_run_connector.check()
        assert peer_state() == state
        assert connector.inventory(leaver) == before

    def test_reported_kinds_are_never_sent(
        self, connector: Connector, leaver: Leaver, peer_state: Callable[[], Any]
    ) -> None:
        """A kept, manual or elsewhere grant is refused by revoke before anything is sent."""
        state = peer_state()
        for grant in connector.inventory(leaver):
            capability = connector.capabilities.of(grant.kind)
            assert capability is not None
            for action in set(capability.actions) & NOT_SENT:
                with pytest.raises(UnsupportedAction):
                    connector.revoke(grant, action)
        assert peer_state() == state

    def test_an_unsupported_action_is_refused_before_anything_is_sent(
        self, connector: Connector, leaver: Leaver, peer_state: Callable[[], Any]
    ) -> None:
        state = peer_state()
        for grant in connector.inventory(leaver):
            with pytest.raises(UnsupportedAction):
                connector.revoke(grant, "conformance-no-such-action")
        assert peer_state() == state

    def test_unknown_person_has_no_access(
        self, connector: Connector, unknown_leaver: Leaver
    ) -> None:
        assert connector.inventory(unknown_leaver) == []
        verification = connector.verify(unknown_leaver)
        assert verification.remaining == []
        assert verification.clean

    def test_retry_after_is_honoured(
        self, connector: Connector, leaver: Leaver, throttle_once: Callable[[int], None]
    ) -> None:
        expected = connector.inventory(leaver)
        throttle_once(1)
        started = time.monotonic()
        assert connector.inventory(leaver) == expected
        assert time.monotonic() - started >= 1.0, "the server asked to wait a second"

    def test_cascaded_grants_go_with_their_parent(
        self, connector: Connector, leaver: Leaver, expects_cascades: bool
    ) -> None:
        grants = connector.inventory(leaver)
        cascaded = [g for g in grants if g.cascades_from is not None]
        if not cascaded:
            assert not expects_cascades, "expects_cascades, but no grant declares cascades_from"
            pytest.skip("no grant declares cascades_from")
        parents = {g.cascades_from for g in cascaded}
        for grant in in_plan_order(sent(connector, [g for g in grants if g.cascades_from is None])):
            capability = connector.capabilities.of(grant.kind)
            assert capability is not None
            action = None
            if grant.key in parents:
                assert capability.cascade_actions, (
                    f"{grant.kind!r} has grants cascading from it but no cascade_actions"
                )
                action = sorted(capability.cascade_actions)[0]
            assert connector.revoke(grant, action).status is OutcomeStatus.REVOKED
        remaining = sent(connector, connector.inventory(leaver))
        assert remaining == [], f"did not go with their parent:\n{_describe(remaining)}"
        verification = connector.verify(leaver)
        assert verification.remaining == [] and verification.clean, verification
