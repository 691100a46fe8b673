"""A leaver's AD user object as the connector reads it, and the values it writes.

userAccountControl bit 0x2 is ACCOUNTDISABLE; accountExpires is a FILETIME (100 ns since
1601-01-01 UTC), 0 or 0x7FFFFFFFFFFFFFFF meaning never; pwdLastSet 0 is "an administrator
set this password and the user must change it", the mark the connector leaves after
replacing the password (so the credential grant is listed until then, and not after).
"""

from __future__ import annotations

import json
import secrets
import string
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

UAC_DISABLED = 0x2
NEVER = (0, 0x7FFFFFFFFFFFFFFF)
_EPOCH_AS_FILETIME = 116444736000000000
USER_ATTRIBUTES = [
    "objectGUID",
    "objectSid",
    "sAMAccountName",
    "userAccountControl",
    "accountExpires",
    "pwdLastSet",
    "memberOf",
    "primaryGroupID",
]


def filetime_now() -> int:
    return _EPOCH_AS_FILETIME + int(datetime.now(UTC).timestamp() * 10_000_000)


def filetime_text(value: int) -> str:
    if value in NEVER:
        return "never"
    seconds = (value - _EPOCH_AS_FILETIME) / 10_000_000
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def guid_of(raw: bytes) -> str:
    """objectGUID bytes (little-endian fields) as the text AD uses in `<GUID=...>`."""
    return str(uuid.UUID(bytes_le=raw))


def sid_text(raw: bytes) -> str:
    """A binary objectSid as S-1-5-21-..."""
    revision, count = raw[0], raw[1]
    authority = int.from_bytes(raw[2:8], "big")
    subs = struct.unpack(f"<{count}I", raw[8 : 8 + 4 * count])
    return "S-" + "-".join(str(x) for x in (revision, authority, *subs))


def random_password(length: int = 32) -> str:
    """A password nobody sees that meets AD's complexity rule (all four character classes)."""
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, "!#%+-.=?@^_~"]
    chars = [secrets.choice(c) for c in classes]
    alphabet = "".join(classes)
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def _text(raw: dict[str, list[bytes]], name: str, default: str = "") -> str:
    values = raw.get(name.lower()) or []
    return values[0].decode("utf-8", "replace") if values else default


@dataclass(frozen=True)
class AdAccount:
    dn: str
    guid: str
    sid: str
    sam: str
    uac: int
    account_expires: int
    pwd_last_set: int
    member_of: tuple[str, ...]
    primary_group_id: int

    @classmethod
    def from_entry(cls, entry: dict[str, object]) -> AdAccount:
        raw = entry["raw"]
        assert isinstance(raw, dict)
        return cls(
            dn=str(entry["dn"]),
            guid=guid_of(raw["objectguid"][0]),
            sid=sid_text(raw["objectsid"][0]) if raw.get("objectsid") else "",
            sam=_text(raw, "sAMAccountName"),
            uac=int(_text(raw, "userAccountControl", "0")),
            account_expires=int(_text(raw, "accountExpires", "0")),
            pwd_last_set=int(_text(raw, "pwdLastSet", "0")),
            member_of=tuple(sorted((v.decode() for v in raw.get("memberof", [])), key=str.lower)),
            primary_group_id=int(_text(raw, "primaryGroupID", "0")),
        )

    @property
    def disabled(self) -> bool:
        return bool(self.uac & UAC_DISABLED)

    @property
    def expired(self) -> bool:
        return self.account_expires not in NEVER and self.account_expires <= filetime_now()

    @property
    def password_replaced(self) -> bool:
        return self.pwd_last_set == 0

    @property
    def primary_group_sid(self) -> str:
        return f"{self.sid.rsplit('-', 1)[0]}-{self.primary_group_id}"

    def in_ou(self, ou: str) -> bool:
        return self.dn.split(",", 1)[1].lower().replace(" ", "") == ou.lower().replace(" ", "")

    def snapshot(self) -> str:
        """What the audit keeps of the account before a step changes it (JSON)."""
        return json.dumps(
            {
                "dn": self.dn,
                "objectGUID": self.guid,
                "userAccountControl": self.uac,
                "accountExpires": filetime_text(self.account_expires),
                "pwdLastSet": self.pwd_last_set,
                "memberOf": list(self.member_of),
                "primaryGroupID": self.primary_group_id,
            },
            sort_keys=True,
        )
