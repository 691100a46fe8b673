"""One settings object: environment (prefix OFFBOARDING_) over one TOML config file."""

from __future__ import annotations

import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from connectors.config import resolve_sources
from connectors.registry import secret_settings
from offboarding.domain.policy import Policy
from offboarding.workinstruction.file import WorkInstructionFile
from offboarding.workinstruction.file import load as load_work_instruction

DEV_HRIS_SECRET = "dev-only-hris-secret-change-me"  # noqa: S105 - refused outside development
DEV_SIGNING_KEY = "dev-only-signing-key-change-me"
OFFBOARD_FLOW = "offboard-leaver"  # the flows' names; their deployments add the instance
RETENTION_FLOW = "apply-retention"
OVERSIGHT_FLOW = "oversight"
_INSTANCE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


class SmtpSettings(BaseModel):
    host: str
    port: int = 587
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None


class PeopleSettings(BaseModel):
    """Where employees, requesters and approvers are looked up."""

    connector: str = "directory"  # name of a configured connector that can act as directory


class EntraSignInSettings(BaseModel):
    """Approvers prove who they are by signing in with Microsoft Entra ID (authorization code
    flow with PKCE) before an approval page accepts their decision. Unset: the link is the proof."""

    tenant_id: str
    client_id: str
    client_secret: SecretStr
    # where the authority lives: Microsoft's cloud, or another (a national cloud, a test fake)
    authority_host: str = "https://login.microsoftonline.com"
    # the ID token claim compared (case-insensitively) with the approver's e-mail address
    match_claim: str = "preferred_username"
    # a CA bundle (PEM) to trust for the authority, when it is not in the system's store
    ca_file: Path | None = None

    @field_validator("tenant_id")
    @classmethod
    def _tenant_guid(cls, value: str) -> str:
        """One tenant, by its ID: the ID token's `tid` is compared with it."""
        if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", value):
            raise ValueError(
                f"approver_sign_in.tenant_id {value!r} is not a tenant ID: use the Directory "
                "(tenant) ID, a GUID, from the app registration's Overview page"
            )
        return value

    @field_validator("authority_host")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        if not re.fullmatch(r"https://[^/?#\s]+/?", value):
            raise ValueError(
                f"approver_sign_in.authority_host {value!r} must be an https URL without a "
                "path, e.g. https://login.microsoftonline.com"
            )
        return value.rstrip("/")


class AfasSettings(BaseModel):
    """AFAS Profit's REST API, to resolve a webhook's dossier item into the leaver through a
    GetConnector the HR administrator publishes in Profit (see the README, "HR-system
    adapters", for the fields it must return)."""

    environment: str = Field(pattern=r"^[0-9]{1,10}$")  # the number, e.g. "12345" of O12345AA
    # the app connector's user token: its <data>, or the whole <token><version>1</version>...
    token: SecretStr
    get_connector: str = Field(default="Offboarding_Dossieritems", pattern=r"^[A-Za-z0-9_]{1,100}$")
    base_url: str | None = None  # default https://<environment>.rest.afas.online/ProfitRestServices
    # the whole lookup, connecting included: AFAS gives a webhook 2 s for its answer, and the
    # people directory and the database need the rest
    timeout_seconds: float = Field(default=1.5, gt=0, le=10)
    # values of the GetConnector's ReasonEndEmployment ("Reden uit dienst") that mean instant
    # dismissal ("ontslag op staande voet"): the case is urgent
    urgent_reasons: list[str] = Field(default_factory=list)

    @field_validator("base_url")
    @classmethod
    def _https_unless_loopback(cls, value: str | None) -> str | None:
        """The token travels in a header: only over TLS, except to this machine."""
        if value is None:
            return None
        value = value.strip().rstrip("/")
        loopback = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/|$)", value)
        if not value.startswith("https://") and loopback is None:
            raise ValueError("must start with https:// (http only to 127.0.0.1 or localhost)")
        return value


def _secret_key(key: str) -> bool:
    return any(hint in key.lower() for hint in ("password", "secret", "token", "key"))


def _home_from_env() -> Path:
    return Path(os.environ.get("OFFBOARDING_HOME", ".offboarding"))


def default_instance(home: Path) -> str:
    """A short name that differs per data dir: its resolved path, hashed."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


def config_file() -> Path:
    """The TOML file settings are read from: OFFBOARDING_CONFIG, or config.toml in the data dir."""
    explicit = os.environ.get("OFFBOARDING_CONFIG")
    return Path(explicit) if explicit else _home_from_env() / "config.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OFFBOARDING_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # a settings error never echoes a value (it may be a secret)
    )

    env: Literal["development", "demo", "production"] = "development"
    home: Path = Field(default_factory=_home_from_env)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = None  # base of links in emails; default http://host:port
    prefect_port: int = 4200
    # Production mode (`offboarding up --production`, `offboarding worker`): Prefect's own
    # database (default: SQLite in the data dir, or PREFECT_SERVER_DATABASE_CONNECTION_URL),
    # the address its server listens on (workers on other machines need to reach it), the
    # worker processes `up` starts, and how many flow runs the work pool runs at once.
    prefect_database_url: str | None = None
    prefect_host: str = "127.0.0.1"
    workers: int = Field(default=1, ge=0, le=32)
    work_pool_concurrency: int = Field(default=4, ge=1, le=1000)
    # Production mode: web processes sharing the service's port (SO_REUSEPORT), so a burst
    # of HR events uses more than one core; the dispatcher runs in the first one only.
    web_processes: int = Field(default=1, ge=1, le=32)
    # Flow-run processes forked from a warm starter that has imported Prefect and the flows
    # once (see offboarding/orchestration/warm.py); off: a new interpreter per flow run.
    warm_start: bool = True

    hris_secret: SecretStr = SecretStr(DEV_HRIS_SECRET)
    hris_previous_secret: SecretStr | None = None  # accepted too, during key rotation
    hris_tolerance_seconds: int = 300
    # HR-system adapters (POST /hris/personio, /hris/afas); a route answers 404 until set
    personio_webhook_token: SecretStr | None = None  # the webhook's `token` in Personio
    afas_webhook_password: SecretStr | None = None  # the webhook's password in AFAS Profit
    afas: AfasSettings | None = None  # resolves AFAS notifications into leavers
    signing_key: SecretStr = SecretStr(DEV_SIGNING_KEY)

    approval_ttl_hours: int = 72
    approver_sign_in: EntraSignInSettings | None = None  # see EntraSignInSettings
    retention_days: int = Field(default=365, ge=1)  # personal data of closed cases, then erased
    timezone: str = "Europe/Amsterdam"
    end_of_day: str = "23:59"  # when a future last working day's run starts, local time
    default_language: Literal["nl", "en"] = "en"
    sender: str = "offboarding@localhost"
    # A Prefect automation posts to this webhook (Microsoft Teams, Slack or any URL taking a
    # JSON POST) when a case's run stops in needs attention; unset: mail and overview only.
    attention_webhook_url: SecretStr | None = None

    smtp: SmtpSettings | None = None
    people: PeopleSettings = PeopleSettings()
    connectors: list[dict[str, Any]] = Field(default_factory=list)

    # Names this installation's deployments on the Prefect server ("offboard-leaver-<instance>"),
    # so installations sharing one server never run each other's cases. Default: a short hash
    # of the resolved data dir.
    instance: str = ""
    # The organisation's choices the work instruction leaves open (`[policy]`): containment
    # on instant dismissal, approvals needed, step order, disable or delete per system.
    policy: Policy = Policy()
    # The work instruction file (YAML; relative to the config file's directory) that is the
    # policy instead of `[policy]`: see workinstruction.example.yaml. It also decides
    # approval_ttl_hours, retention_days, end_of_day and people.connector when it states them.
    work_instruction: Path | None = None
    _work_instruction: WorkInstructionFile | None = PrivateAttr(default=None)
    retry_delays_seconds: list[float] = Field(default_factory=lambda: [2.0, 10.0, 30.0])
    # Database work the web app does at once (worker threads; also the PostgreSQL pool size).
    db_concurrency: int = Field(default=16, ge=1, le=200)
    # A crashed or failed run of an open case is rescheduled after these delays, then the
    # case goes to "needs attention". The dispatcher looks for such work this often.
    recovery_delays_seconds: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0, 600.0])
    dispatch_interval_seconds: float = Field(default=5.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; use an IANA name") from exc
        return value

    @field_validator("connectors")
    @classmethod
    def _named_connectors(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each connector named (default: its kind; "directory" for ldap), names unique, and
        its secrets read from where the config points (`<secret>_env`, `<secret>_file`,
        `"env:NAME"`; see `connectors.config`). The rest is checked by the connector's own
        typed config when it is built (`offboarding check`, start-up)."""
        names: set[str] = set()
        for index, config in enumerate(value):
            if "kind" not in config:
                raise ValueError(f'connector #{index + 1} needs a kind (e.g. kind = "ldap")')
            config.setdefault("name", config["kind"] if config["kind"] != "ldap" else "directory")
            resolved = resolve_sources(config, secret_settings(config["kind"]))
            config.clear()
            config.update(resolved)
            if config["name"] in names:
                raise ValueError(f"two connectors are named {config['name']!r}; names must differ")
            names.add(config["name"])
        return value

    @field_validator("work_instruction")
    @classmethod
    def _valid_work_instruction(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """The file, found next to the config file, valid and naming configured connectors;
        its problems are plain `FILE:LINE: field: message` lines."""
        if value is None:
            return None
        path = value if value.is_absolute() else config_file().resolve().parent / value
        connectors = info.data.get("connectors")
        names = [c["name"] for c in connectors] if isinstance(connectors, list) else None
        load_work_instruction(path, connectors=names)  # InvalidWorkInstruction is a ValueError
        return path

    @model_validator(mode="after")
    def _work_instruction_is_the_policy(self) -> Settings:
        """With a work instruction file, the policy and the settings it decides come from it;
        the same choice made elsewhere too would leave two truths, so that is refused."""
        if self.work_instruction is None:
            return self
        if "policy" in self.model_fields_set:
            raise ValueError(
                f"[policy] and work_instruction ({self.work_instruction.name}) are both set: "
                "the work instruction file is the policy; remove [policy] (and a top-level "
                "urgent_containment) from the configuration"
            )
        names = [c["name"] for c in self.connectors]
        loaded = load_work_instruction(self.work_instruction, connectors=names)
        current = {
            "approval_ttl_hours": self.approval_ttl_hours,
            "retention_days": self.retention_days,
            "end_of_day": self.end_of_day,
            "people_connector": self.people.connector,
        }
        given = {"approval_ttl_hours", "retention_days", "end_of_day"} & self.model_fields_set
        given |= {"people_connector"} if "people" in self.model_fields_set else set()
        for name, value in loaded.settings.items():
            if name in given and current[name] != value:
                raise ValueError(
                    f"{name.replace('_', '.', 1) if name.startswith('people') else name} is "
                    f"{current[name]!r} here but {value!r} in the work instruction "
                    f"{self.work_instruction.name}: set it in one place"
                )
        self.policy = loaded.policy
        self.approval_ttl_hours = loaded.settings["approval_ttl_hours"]
        self.retention_days = loaded.settings["retention_days"]
        self.end_of_day = loaded.settings.get("end_of_day", self.end_of_day)
        if "people_connector" in loaded.settings:
            self.people = PeopleSettings(connector=loaded.settings["people_connector"])
        self._work_instruction = loaded
        return self

    @property
    def work_instruction_file(self) -> WorkInstructionFile | None:
        """The work instruction file as loaded with these settings (its version and hash)."""
        return self._work_instruction

    @model_validator(mode="after")
    def _policy_reaches_connectors(self) -> Settings:
        """The policy's disable-or-delete choice is handed to the connector it names (as its
        `on_leave` setting), so what it lists and checks fits what the plan will do."""
        names = [c["name"] for c in self.connectors]
        for name, choice in self.policy.on_leave.items():
            if name not in names:
                raise ValueError(
                    f"[policy.on_leave] names connector {name!r}, which is not configured; "
                    f"configured: {', '.join(names) or 'none'}"
                )
            self.connector_config(name)["on_leave"] = choice.value
        return self

    @field_validator("instance")
    @classmethod
    def _valid_instance(cls, value: str) -> str:
        if value and not _INSTANCE.fullmatch(value):
            raise ValueError(
                f"instance {value!r} is not a valid name: use 1-40 lowercase letters, digits "
                "and dashes, starting with a letter or digit"
            )
        return value

    @model_validator(mode="after")
    def _instance_from_home(self) -> Settings:
        if not self.instance:
            self.instance = default_instance(self.home)
        return self

    @model_validator(mode="before")
    @classmethod
    def _top_level_containment(cls, data: Any) -> Any:
        """`urgent_containment` at the top level (older configurations) moves into the policy."""
        if isinstance(data, dict) and "urgent_containment" in data:
            data = dict(data)
            moved = data.pop("urgent_containment")
            policy = data.get("policy") or {}
            if isinstance(policy, Policy):
                policy = policy.model_dump()
            data["policy"] = {**policy, "urgent_containment": moved}
        return data

    @model_validator(mode="after")
    def _no_default_secrets_in_production(self) -> Settings:
        if self.env == "production":
            weak = [
                name
                for name, value, default in (
                    ("OFFBOARDING_HRIS_SECRET", self.hris_secret, DEV_HRIS_SECRET),
                    ("OFFBOARDING_SIGNING_KEY", self.signing_key, DEV_SIGNING_KEY),
                )
                if value.get_secret_value() in (default, "") or len(value.get_secret_value()) < 16
            ]
            weak += [  # an HR-system adapter's secret, when one is set
                f"OFFBOARDING_{name.upper()}"
                for name in ("personio_webhook_token", "afas_webhook_password")
                if (value := getattr(self, name)) is not None and len(value.get_secret_value()) < 16
            ]
            sign_in = self.approver_sign_in
            if sign_in is not None and len(sign_in.client_secret.get_secret_value()) < 16:
                weak.append("OFFBOARDING_APPROVER_SIGN_IN__CLIENT_SECRET")
            if weak:
                raise ValueError(
                    "refusing to start in production with a default or short secret: set "
                    + ", ".join(weak)
                    + " to a random value of at least 16 characters"
                )
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name == "connectors":
                value = [
                    {k: ("**********" if _secret_key(k) else v) for k, v in c.items()}
                    for c in self.connectors
                ]
            yield name, value

    # -- derived values -------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'offboarding.db').resolve()}"

    @property
    def resolved_prefect_database_url(self) -> str:
        """Prefect's database URL (async driver), as its server needs it."""
        url = self.prefect_database_url or os.environ.get(
            "PREFECT_SERVER_DATABASE_CONNECTION_URL",
            f"sqlite+aiosqlite:///{(self.home / 'prefect' / 'prefect.db').resolve()}",
        )
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def deployment(self) -> str:
        """The case flow's deployment as "flow/deployment": served by `up`, used by the web app."""
        return f"{OFFBOARD_FLOW}/{OFFBOARD_FLOW}-{self.instance}"

    @property
    def retention_deployment(self) -> str:
        return f"{RETENTION_FLOW}/{RETENTION_FLOW}-{self.instance}"

    @property
    def oversight_deployment(self) -> str:
        """The management overview, refreshed every 15 minutes."""
        return f"{OVERSIGHT_FLOW}/{OVERSIGHT_FLOW}-{self.instance}"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def connector_config(self, name: str) -> dict[str, Any]:
        for config in self.connectors:
            if config.get("name") == name:
                return config
        raise LookupError(
            f"no connector named {name!r} is configured; configured: "
            f"{[c.get('name') for c in self.connectors]}"
        )


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return Settings()
