"""A small demo organisation for the local directory: people, teams, managers and one leaver.

Jan de Vries (E1042) is leaving. He is in five groups: the groupOfNames
`developers`, `vpn-users`, `laravel-admins` and `legacy-ftp` (where he is the only
member), and the posixGroup `deploy`; in the information system (`demo.apex`, a SCIM
app) his account is in `apex-users` and `apex-admins`. Hanna Bakker (E0007, HR) files
the request; she is a manager too, so four-eyes approval must exclude her for being the
requester, leaving three other managers eligible to approve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from demo.directory import LocalDirectory

# employee id, uid, given name, surname, department, preferred language
EMPLOYEES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("E0007", "hbakker", "Hanna", "Bakker", "HR", "nl"),
    ("E1001", "sjansen", "Sanne", "Jansen", "HR", "nl"),
    ("E1002", "ddeboer", "Daan", "de Boer", "Engineering", "nl"),
    ("E1003", "evisser", "Emma", "Visser", "Support", "en"),
    ("E1004", "lsmit", "Lars", "Smit", "Engineering", "nl"),
    ("E1005", "fmeijer", "Fleur", "Meijer", "Finance", "nl"),
    ("E1006", "bmulder", "Bram", "Mulder", "Engineering", "en"),
    ("E1007", "ndegroot", "Noor", "de Groot", "Operations", "nl"),
    ("E1008", "tbos", "Thijs", "Bos", "Engineering", "nl"),
    ("E1009", "lvos", "Lotte", "Vos", "Support", "nl"),
    ("E1010", "rpeters", "Ruben", "Peters", "Support", "en"),
    ("E1011", "ihendriks", "Iris", "Hendriks", "Finance", "en"),
    ("E1012", "svanleeuwen", "Sem", "van Leeuwen", "Engineering", "nl"),
    ("E1013", "jdekker", "Julia", "Dekker", "Finance", "nl"),
    ("E1014", "fbrouwer", "Finn", "Brouwer", "Engineering", "en"),
    ("E1015", "edewit", "Eva", "de Wit", "Finance", "nl"),
    ("E1016", "mdijkstra", "Milan", "Dijkstra", "Operations", "nl"),
    ("E1017", "asmits", "Anouk", "Smits", "Support", "nl"),
    ("E1018", "jdegraaf", "Jesse", "de Graaf", "Operations", "en"),
    ("E1019", "svandermeer", "Sophie", "van der Meer", "Engineering", "nl"),
    ("E1020", "zkuipers", "Zoë", "Kuipers", "Support", "en"),
    ("E1042", "jdevries", "Jan", "de Vries", "Engineering", "nl"),
)

LEAVER_ID = "E1042"
REQUESTER_ID = "E0007"
MANAGERS = ("hbakker", "lsmit", "ndegroot", "ihendriks")

GROUPS_OF_NAMES: dict[str, tuple[str, ...]] = {
    "developers": (
        "jdevries",
        "ddeboer",
        "lsmit",
        "bmulder",
        "tbos",
        "svanleeuwen",
        "fbrouwer",
        "svandermeer",
    ),
    "support": ("evisser", "lvos", "rpeters", "asmits", "zkuipers"),
    "finance": ("fmeijer", "ihendriks", "jdekker", "edewit"),
    "hr": ("hbakker", "sjansen"),
    "vpn-users": (
        "jdevries",
        "ddeboer",
        "evisser",
        "lsmit",
        "bmulder",
        "ndegroot",
        "mdijkstra",
        "jdegraaf",
    ),
    "laravel-admins": ("jdevries", "bmulder"),
    "apex-users": ("fmeijer", "jdekker", "edewit", "ihendriks"),
    "legacy-ftp": ("jdevries",),  # the leaver is the only member
    "managers": MANAGERS,
}
POSIX_GROUPS: dict[str, tuple[int, tuple[str, ...]]] = {
    "deploy": (5001, ("jdevries", "bmulder", "ddeboer")),
    "backup-operators": (5002, ("svanleeuwen", "mdijkstra")),
}


def email_of(uid: str) -> str:
    """A demo employee's work email: also their userName in the demo's SCIM app."""
    return f"{uid}@example.test"


@dataclass(frozen=True)
class DemoOrg:
    """What `seed_demo_org` created, for the demo and for tests to refer to."""

    leaver_id: str
    leaver_uid: str
    leaver_dn: str
    leaver_email: str
    leaver_name: str
    requester_id: str
    managers_group_dn: str
    manager_ids: list[str] = field(default_factory=list)
    employee_ids: list[str] = field(default_factory=list)
    group_dns: list[str] = field(default_factory=list)
    leaver_group_dns: list[str] = field(default_factory=list)


def seed_demo_org(directory: LocalDirectory, *, password: str) -> DemoOrg:
    """Add the demo people and groups over one connection; every person gets `password`."""
    people, groups = directory.users_base, directory.groups_base
    dn_of = {uid: f"uid={uid},{people}" for _, uid, *_ in EMPLOYEES}
    id_of = {uid: employee_id for employee_id, uid, *_ in EMPLOYEES}
    conn = directory.admin_connection()
    try:
        for employee_id, uid, given, surname, department, language in EMPLOYEES:
            full = f"{given} {surname}"
            conn.add(
                dn_of[uid],
                ["inetOrgPerson"],
                {
                    "uid": uid,
                    "cn": full,
                    "sn": surname,
                    "givenName": given,
                    "displayName": full,
                    "mail": email_of(uid),
                    "employeeNumber": employee_id,
                    "departmentNumber": department,
                    "preferredLanguage": language,
                    "userPassword": password,
                },
            )
        group_dns = []
        for name, members in GROUPS_OF_NAMES.items():
            group_dns.append(f"cn={name},{groups}")
            conn.add(
                group_dns[-1], ["groupOfNames"], {"cn": name, "member": [dn_of[m] for m in members]}
            )
        for name, (gid, member_uids) in POSIX_GROUPS.items():
            group_dns.append(f"cn={name},{groups}")
            conn.add(
                group_dns[-1],
                ["posixGroup"],
                {"cn": name, "gidNumber": gid, "memberUid": list(member_uids)},
            )
    finally:
        conn.unbind()

    leaver_uid = next(uid for employee_id, uid, *_ in EMPLOYEES if employee_id == LEAVER_ID)
    leaver_groups = [
        f"cn={name},{groups}" for name, members in GROUPS_OF_NAMES.items() if leaver_uid in members
    ]
    leaver_groups += [
        f"cn={name},{groups}" for name, (_, uids) in POSIX_GROUPS.items() if leaver_uid in uids
    ]
    leaver = next(e for e in EMPLOYEES if e[0] == LEAVER_ID)
    return DemoOrg(
        leaver_id=LEAVER_ID,
        leaver_uid=leaver_uid,
        leaver_dn=dn_of[leaver_uid],
        leaver_email=email_of(leaver_uid),
        leaver_name=f"{leaver[2]} {leaver[3]}",
        requester_id=REQUESTER_ID,
        managers_group_dn=f"cn=managers,{groups}",
        manager_ids=sorted(id_of[uid] for uid in MANAGERS),
        employee_ids=sorted(id_of.values()),
        group_dns=sorted(group_dns),
        leaver_group_dns=sorted(leaver_groups),
    )
