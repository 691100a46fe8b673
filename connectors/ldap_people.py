"""The people directory on OpenLDAP: who an employee id is, and who counts as a manager."""

from __future__ import annotations

import re

import ldap3
import structlog
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from connectors.base import PermanentError, Person
from connectors.ldap_client import LdapClient

log = structlog.get_logger(__name__)

_PERSON_ATTRIBUTES = ["displayName", "cn", "mail", "preferredLanguage"]


def normalise_language(value: str | None) -> str | None:
    """'nl', 'nl-NL', 'en-GB;q=0.8' and the like to 'nl' / 'en'; anything else to None."""
    if not value:
        return None
    first = re.split(r"[,;]", value, maxsplit=1)[0].strip().lower()
    primary = re.split(r"[-_]", first, maxsplit=1)[0]
    return primary if primary in ("nl", "en") else None


class LdapPeopleDirectory(LdapClient):
    """Finds employees by `employee_id_attribute`; managers are `managers_group` plus `managers`."""

    def find_person(self, employee_id: str) -> Person | None:
        with self.session() as conn:
            return self._find(conn, employee_id)

    def managers(self) -> list[Person]:
        people: dict[str, Person] = {}
        with self.session() as conn:
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
        with self.session() as conn:
            found = self._group_members(conn, group_dn, setting="approvers_group")
        unique = {person.employee_id: person for person in found}
        return [unique[key] for key in sorted(unique)]

    def _find(self, conn: ldap3.Connection, employee_id: str) -> Person | None:
        attribute = self.config.employee_id_attribute
        search_filter = f"({attribute}={escape_filter_chars(employee_id)})"
        found = self.search(
            conn, self.config.users_base, search_filter, [attribute, *_PERSON_ATTRIBUTES]
        )
        if len(found) > 1:
            names = ", ".join(sorted(entry["dn"] for entry in found))
            raise PermanentError(
                f"{self.name}: more than one person matches {search_filter}: {names}"
            )
        return self._person(found[0]["attributes"]) if found else None

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
