"""The people directory keeps bound connections for the next lookup (real slapd)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import ldap3
import pytest

from connectors.base import PermanentError
from connectors.ldap import LdapConfig
from connectors.ldap_client import default_connection_factory
from connectors.ldap_people import LdapPeopleDirectory
from demo.directory import DemoOrg, LocalDirectory


class Counting:
    """A connection factory that remembers every connection it made."""

    def __init__(self, config: LdapConfig) -> None:
        self._make = default_connection_factory(config)
        self.made: list[ldap3.Connection] = []
        self._lock = threading.Lock()

    def __call__(self) -> ldap3.Connection:
        conn = self._make()
        with self._lock:
            self.made.append(conn)
        return conn


def people_with(
    ldap_config: dict[str, Any], **options: Any
) -> tuple[LdapPeopleDirectory, Counting]:
    config = LdapConfig.model_validate(ldap_config)
    factory = Counting(config)
    return LdapPeopleDirectory(config, connect=factory, **options), factory


def test_find_people_is_one_search_keyed_by_the_id_asked(ldap_config: dict[str, Any]) -> None:
    people, factory = people_with(ldap_config)
    found = people.find_people(["E1020", "e1013", "E9999", "E1020"])
    assert sorted(found) == ["E1020", "e1013"]  # the unknown one is absent
    assert found["E1020"].display_name == "Zoë Kuipers"
    assert found["e1013"].employee_id == "E1013"  # employeeNumber ignores case
    assert people.find_people([]) == {}
    assert len(factory.made) == 1


def test_lookups_reuse_one_bound_connection(ldap_config: dict[str, Any], demo_org: DemoOrg) -> None:
    people, factory = people_with(ldap_config)
    for _ in range(5):
        assert people.find_person("E1020") is not None
    assert people.managers()
    assert people.group_members(demo_org.managers_group_dn)
    assert len(factory.made) == 1
    with pytest.raises(PermanentError, match="does not exist"):
        people.group_members("nobody-here")  # an answer, not a broken connection
    assert people.find_person("E1020") is not None
    assert len(factory.made) == 2  # the one that failed was not kept
    assert not factory.made[0].bound
    assert factory.made[1].bound
    people.close()
    assert not factory.made[1].bound


def test_a_broken_kept_connection_is_replaced(ldap_config: dict[str, Any]) -> None:
    people, factory = people_with(ldap_config)
    assert people.find_person("E1020") is not None
    factory.made[0].socket.shutdown(socket.SHUT_RDWR)  # as when the server drops it
    zoe = people.find_person("E1020")
    assert zoe is not None and zoe.display_name == "Zoë Kuipers"
    assert len(factory.made) == 2
    assert people.find_person("E1013") is not None
    assert len(factory.made) == 2  # the new one is kept in turn


def test_refused_bind_is_reported_and_nothing_kept(ldap_config: dict[str, Any]) -> None:
    people, factory = people_with({**ldap_config, "bind_password": "wrong"})
    for _ in range(2):
        with pytest.raises(PermanentError, match=r"bind as .* was refused"):
            people.find_person("E1020")
    assert len(factory.made) == 2
    assert not any(conn.bound for conn in factory.made)


def test_lookups_at_once_each_get_a_connection_and_few_are_kept(
    ldap_config: dict[str, Any],
) -> None:
    people, factory = people_with(ldap_config, keep_open=2)
    ids = ["E1020", "E1013", "E1042", "E0007"] * 3
    results: dict[int, Any] = {}
    gate = threading.Barrier(len(ids))

    def look(i: int, employee_id: str) -> None:
        gate.wait()
        results[i] = people.find_person(employee_id)

    threads = [threading.Thread(target=look, args=pair) for pair in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i].employee_id for i in range(len(ids))] == ids
    assert sum(conn.bound for conn in factory.made) <= 2  # the rest were unbound
    assert len(people._idle) <= 2


def test_a_forked_process_does_not_use_its_parents_connections(
    ldap_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch, directory: LocalDirectory
) -> None:
    people, factory = people_with(ldap_config)
    assert people.find_person("E1020") is not None
    parents = factory.made[0]
    real_pid = people._owner
    monkeypatch.setattr("connectors.ldap_people.os.getpid", lambda: real_pid + 1)
    assert people.find_person("E1013") is not None
    assert len(factory.made) == 2
    # the parent's session was left alone, never unbound from the child
    assert parents.bound and parents.search(directory.users_base, "(uid=*)", attributes=["uid"])
