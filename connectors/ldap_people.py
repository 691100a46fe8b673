"""The people directory on OpenLDAP: who an employee id is, and who counts as a manager."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import ldap3
import structlog
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from connectors.base import PermanentError, Person, TransientError
from connectors.ldap_client import ConnectionFactory, LdapClient, LdapConfig

log = structlog.get_logger(__name__)
T = TypeVar("T")
KEEP_OPEN = 4  # bound connections kept for the next lookup (intake looks people up in bursts)

_PERSON_ATTRIBUTES = ["displayName", "cn", "mail", "preferredLanguage"]


def normalise_language(value: str | None) -> str | None:
    """'nl', 'nl-NL', 'en-GB;q=0.8' and the like to 'nl' / 'en'; anything else to None."""
    if not value:
        return None
    first = re.split(r"[,;]", value, maxsplit=1)[0].strip().lower()
    primary = re.split(r"[-_]", first, maxsplit=1)[0]
    return primary if primary in ("nl", "en") else None


class LdapPeopleDirectory(LdapClient):
    """Finds employees by `employee_id_attribute`; managers are `managers_group` plus `managers`.

    Lookups reuse bound connections (at most `keep_open` idle), so a burst of HR events
    does not open and bind a connection per person. A kept connection the server has
    closed meanwhile is dropped and the lookup made once more on a new one. A forked
    process never uses its parent's connections."""

    def __init__(
        self,
        config: LdapConfig,
        *,
        connect: ConnectionFactory | None = None,
        dry_run: bool = False,
        keep_open: int = KEEP_OPEN,
    ) -> None:
        super().__init__(config, connect=connect, dry_run=dry_run)
        self.keep_open = keep_open
        self._idle: list[ldap3.Connection] = []
        self._owner = os.getpid()
        self._idle_lock = threading.Lock()

    def find_person(self, employee_id: str) -> Person | None:
        return self._reading(lambda conn: self._find(conn, employee_id))

    def find_people(self, employee_ids: Sequence[str]) -> dict[str, Person]:
        """The people among `employee_ids` (one search), keyed by the id asked for."""
        wanted = list(dict.fromkeys(employee_ids))
        if not wanted:
            return {}
        return self._reading(lambda conn: self._find_all(conn, wanted))

    def managers(self) -> list[Person]:
        return self._reading(self._managers)

    def _managers(self, conn: ldap3.Connection) -> list[Person]:
        people: dict[str, Person] = {}
        if self.config.managers_group:
            for person in self._group_members(conn, self.config.managers_group):
                people[person.employee_id] = person
        for employee_id in self.config.managers:
            if employee_id in people:
                continue
            found = self._find(conn, employee_id)
            if found is None:
                log.warning(
                    "configured manager not found", connector=self.name, employee_id=employee_id
                )
                continue
            people[found.employee_id] = found
        return [people[key] for key in sorted(people)]

    def group_members(self, group: str) -> list[Person]:
        """The people in `group`: a DN, or a cn under `groups_base` (e.g. "management")."""
        group_dn = group if "=" in group else f"cn={escape_rdn(group)},{self.config.groups_base}"
        found = self._reading(
            lambda conn: self._group_members(conn, group_dn, setting="approvers_group")
        )
        unique = {person.employee_id: person for person in found}
        return [unique[key] for key in sorted(unique)]

    def _find(self, conn: ldap3.Connection, employee_id: str) -> Person | None:
        return self._find_all(conn, [employee_id]).get(employee_id)

    def _find_all(self, conn: ldap3.Connection, employee_ids: list[str]) -> dict[str, Person]:
        attribute = self.config.employee_id_attribute
        terms = [f"({attribute}={escape_filter_chars(one)})" for one in employee_ids]
        search_filter = terms[0] if len(terms) == 1 else f"(|{''.join(terms)})"
        found = self.search(
            conn, self.config.users_base, search_filter, [attribute, *_PERSON_ATTRIBUTES]
        )
        people: dict[str, Person] = {}
        for employee_id, term in zip(employee_ids, terms, strict=True):
            # the directory compares ids by its own matching rule (usually ignoring case)
            matches = [
                entry
                for entry in found
                if any(
                    value.casefold() == employee_id.casefold()
                    for value in entry["attributes"].get(attribute.lower(), [])
                )
            ]
            if len(matches) > 1:
                names = ", ".join(sorted(entry["dn"] for entry in matches))
                raise PermanentError(f"{self.name}: more than one person matches {term}: {names}")
            person = self._person(matches[0]["attributes"]) if matches else None
            if person is not None:
                people[employee_id] = person
        return people

    # -- kept connections -----------------------------------------------------------

    def _reading(self, work: Callable[[ldap3.Connection], T]) -> T:
        """`work` on a kept connection, else on a new one; kept afterwards if it did not fail."""
        kept = self._take()
        if kept is not None:
            try:
                result = work(kept)
            except TransientError as exc:  # e.g. the server closed it while it was kept
                self.close_quietly(kept)
                log.debug("kept ldap connection failed; once more on a new one", error=str(exc))
            except BaseException:
                self.close_quietly(kept)
                raise
            else:
                self._give_back(kept)
                return result
        with self._opened() as conn:
            return work(conn)

    @contextmanager
    def _opened(self) -> Iterator[ldap3.Connection]:
        conn = self.bound_connection()
        try:
            yield conn
        except BaseException:
            self.close_quietly(conn)
            raise
        self._give_back(conn)

    def _take(self) -> ldap3.Connection | None:
        with self._idle_lock_here():
            return self._idle.pop() if self._idle else None

    def _give_back(self, conn: ldap3.Connection) -> None:
        with self._idle_lock_here():
            if len(self._idle) < self.keep_open:
                self._idle.append(conn)
                return
        self.close_quietly(conn)

    def close(self) -> None:
        """Unbind the kept connections (they are also dropped when the process ends)."""
        with self._idle_lock_here():
            idle, self._idle = self._idle, []
        for conn in idle:
            self.close_quietly(conn)

    def _idle_lock_here(self) -> threading.Lock:
        """This process's lock. In a forked child the parent's connections are forgotten,
        never unbound (that would end the parent's sessions), and its lock replaced (another
        thread may have held it at the fork)."""
        if self._owner != os.getpid():
            self._owner, self._idle, self._idle_lock = os.getpid(), [], threading.Lock()
        return self._idle_lock

    def _group_members(
        self, conn: ldap3.Connection, group_dn: str, *, setting: str = "managers_group"
    ) -> list[Person]:
        group = self.read(conn, group_dn, ["member", "memberUid"])
        if group is None:
            raise PermanentError(f"{self.name}: {setting} {group_dn} does not exist")
        attribute = self.config.employee_id_attribute
        people = []
        for member in group.get("member", []):
            if not member:
                continue  # the empty DN, kept in a group that would otherwise be empty
            entry = self.read(conn, member, [attribute, *_PERSON_ATTRIBUTES])
            person = self._person(entry) if entry else None
            if person is not None:
                people.append(person)
        for uid in group.get("memberuid", []):
            search_filter = f"(uid={escape_filter_chars(uid)})"
            for found in self.search(
                conn, self.config.users_base, search_filter, [attribute, *_PERSON_ATTRIBUTES]
            ):
                person = self._person(found["attributes"])
                if person is not None:
                    people.append(person)
        return people

    def _person(self, attributes: dict[str, list[str]]) -> Person | None:
        ids = attributes.get(self.config.employee_id_attribute.lower(), [])
        if not ids:
            return None
        name = (attributes.get("displayname") or attributes.get("cn") or ids)[0]
        return Person(
            employee_id=ids[0],
            display_name=name,
            email=(attributes.get("mail") or [""])[0],
            language=normalise_language(next(iter(attributes.get("preferredlanguage", [])), None)),
        )
