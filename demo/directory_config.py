"""The cn=config of the local directory: one mdb database with memberof, refint and ppolicy."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

MODULE_PATH = Path("/usr/lib/ldap")
SCHEMA_DIR = Path("/etc/ldap/schema")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")


def ssha(password: str) -> str:
    """An RFC 2307 `{SSHA}` hash of `password`, as slapd expects in olcRootPW."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 - {SSHA} is SHA-1 by definition
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def config_ldif(
    *, workdir: Path, suffix: str, admin_password: str, tls: tuple[Path, Path] | None = None
) -> str:
    """The cn=config tree for one database; loaded with `slapadd -n0`.

    `tls` is (certificate, private key), both PEM, for StartTLS and ldaps://.
    """
    policy_dn = f"cn=default,ou=policies,{suffix}"
    database = "olcDatabase={1}mdb,cn=config"
    schemas = "\n".join(f"include: file://{SCHEMA_DIR / name}.ldif\n" for name in SCHEMAS)
    certificate = (
        f"olcTLSCertificateFile: {tls[0]}\nolcTLSCertificateKeyFile: {tls[1]}\n" if tls else ""
    )
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {workdir / "slapd.pid"}
olcArgsFile: {workdir / "slapd.args"}
{certificate}
dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_PATH}
olcModuleLoad: back_mdb
olcModuleLoad: memberof
olcModuleLoad: refint
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config

dn: {database}
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {workdir / "data"}
olcDbMaxSize: 1073741824
olcSuffix: {suffix}
olcRootDN: cn=admin,{suffix}
olcRootPW: {ssha(admin_password)}
olcDbIndex: objectClass eq
olcDbIndex: uid,mail,employeeNumber eq
olcDbIndex: member,memberUid eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by users read by * none

dn: olcOverlay={{0}}memberof,{database}
objectClass: olcOverlayConfig
objectClass: olcMemberOf
olcOverlay: {{0}}memberof
olcMemberOfGroupOC: groupOfNames
olcMemberOfMemberAD: member
olcMemberOfMemberOfAD: memberOf
olcMemberOfRefInt: TRUE

dn: olcOverlay={{1}}refint,{database}
objectClass: olcOverlayConfig
objectClass: olcRefintConfig
olcOverlay: {{1}}refint
olcRefintAttribute: member
olcRefintNothing: cn=nobody,{suffix}

dn: olcOverlay={{2}}ppolicy,{database}
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{2}}ppolicy
olcPPolicyDefault: {policy_dn}
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: FALSE
"""
