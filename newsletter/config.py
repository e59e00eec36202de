"""config.toml plus NEWSLETTER_* environment variables -> one frozen, validated Settings."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import tomllib
from datetime import time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from newsletter.errors import ConfigError
from newsletter.headers import control_character

ENV_PREFIX = "NEWSLETTER_"
ENV_NESTING = "__"
#: Read only from the environment: a secret committed in config.toml would leak with the repo.
SECRET_KEYS = {("smtp", "password"), ("secret_key",), ("inbound", "mailgun_signing_key")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    #: SQLAlchemy URL; a relative SQLite path is taken from the config file's folder.
    url: str = "sqlite:///var/newsletter.db"
    #: On SQLite, how long a write waits for another process's lock before it gives up; a
    #: worker then keeps what it could not record and tries again, it never drops it.
    busy_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _parses_as_sqlalchemy_url(cls, value: str) -> str:
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "expected a database URL such as sqlite:///var/newsletter.db"
            ) from None
        return value


class SenderSettings(_Section):
    #: The From name. At most 100 characters, which also bounds the From header's length.
    name: str = Field(min_length=1, max_length=100)
    address: EmailStr
    #: From address of transactional mail (the opt-in confirmation); empty means `address`.
    transactional_address: EmailStr | Literal[""] = ""
    #: Mailbox behind the mailto: half of List-Unsubscribe.
    unsubscribe_address: EmailStr
    #: Printed in every footer (CAN-SPAM); lines separated by newlines.
    postal_address: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _one_line_of_text(cls, value: str) -> str:
        # It goes into every From header: a line break there would start a header of its own.
        if found := control_character(value):
            raise ValueError(f"contains a control character ({found}); it must be one line")
        if not value.strip():
            raise ValueError("must not be blank")
        return " ".join(value.split())

    @field_validator("postal_address")
    @classmethod
    def _printable_lines(cls, value: str) -> str:
        if found := control_character(value, line_breaks=True):
            raise ValueError(f"contains a control character ({found})")
        return value

    @field_validator("address", "transactional_address", "unsubscribe_address")
    @classmethod
    def _ascii_address(cls, value: str) -> str:
        # Headers carry addresses as they are; one that is not ASCII would need SMTPUTF8
        # from every relay on the way, and List-Id and Message-ID take its domain.
        if not value.isascii():
            raise ValueError("must be an ASCII address (internationalised ones are not supported)")
        return value

    @property
    def postal_lines(self) -> list[str]:
        return [line.strip() for line in self.postal_address.splitlines() if line.strip()]

    @property
    def transactional_from(self) -> str:
        return self.transactional_address or self.address

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


class SiteSettings(_Section):
    #: Public base URL of the web app; every link in an email starts with it.
    base_url: HttpUrl = HttpUrl("http://localhost:8000")

    @property
    def base(self) -> str:
        return str(self.base_url).rstrip("/")


class SmtpSettings(_Section):
    #: Empty: no relay; mail goes to the development outbox under var/outbox/.
    host: str = ""
    port: int = Field(default=587, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: str = ""
    password: SecretStr | None = None
    #: Send through this relay although site.base_url is plain http. Only for a local test
    #: relay: links in real mail must be https, or unsubscribe tokens travel in clear text.
    allow_http_links: bool = False


class SendingSettings(_Section):
    max_per_second: float = Field(default=10.0, gt=0)
    #: 0 means no hourly or daily cap.
    max_per_hour: int = Field(default=0, ge=0)
    max_per_day: int = Field(default=0, ge=0)
    connections: int = Field(default=2, ge=1, le=100)
    #: Deliveries a dispatcher claims at once; it claims more as they go out.
    batch_size: int = Field(default=500, ge=1, le=10_000)
    #: Outcomes are written every this many messages: a crashed worker re-sends at most
    #: this many plus `connections`.
    record_every: int = Field(default=50, ge=1)
    #: How long a claim holds before another worker may take the delivery over, if the
    #: worker holding it stops renewing it (it renews every sixth of this while alive). A
    #: send starts only with half of it left, so that half must outlast a message's
    #: exchange (smtp_timeout_s for the commands, smtp_data_timeout_s for the body).
    lease_s: float = Field(default=1800, gt=0)
    retry_first_delay_s: float = Field(default=300, gt=0)
    retry_max_delay_s: float = Field(default=4 * 3600, gt=0)
    give_up_after_s: float = Field(default=4 * 86400, gt=0)
    #: RFC 5321 (4.5.3.2) gives the server 5 minutes for the greeting, MAIL and RCPT.
    smtp_timeout_s: float = Field(default=300, gt=0)
    #: RFC 5321 allows the server ten minutes to answer the end of the message body.
    smtp_data_timeout_s: float = Field(default=600, gt=0)
    #: This many connection failures in a row (refused, no greeting, 421, garbage, TLS)
    #: open the relay's circuit: no connection is tried until a backoff has passed, then
    #: one probe. The backoff starts at circuit_first_delay_s and doubles up to the max.
    circuit_failures: int = Field(default=3, ge=1)
    circuit_first_delay_s: float = Field(default=10, gt=0)
    circuit_max_delay_s: float = Field(default=600, gt=0)
    #: Recipients refused for policy reasons (5.7.x) pause all sending once they are more
    #: than this share of the last policy_refusal_window attempts: then it is likely our
    #: mail (SPF, DKIM, DMARC, reputation), not the recipients.
    policy_refusal_share: float = Field(default=0.05, gt=0, le=1)
    policy_refusal_window: int = Field(default=200, ge=1)
    #: On SIGTERM or Ctrl-C, sends already under way get this long to finish.
    shutdown_grace_s: float = Field(default=8, ge=0)
    #: At most this many lessons and newsletter issues to one person a day, on their own
    #: calendar; more wait for the next day's send window. 0: no cap.
    max_per_subscriber_per_day: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> SendingSettings:
        slowest_s = 2 * (self.smtp_timeout_s + self.smtp_data_timeout_s)
        if self.lease_s < slowest_s:
            raise ValueError(
                f"lease_s ({self.lease_s:g}) must be at least twice smtp_timeout_s + "
                f"smtp_data_timeout_s ({slowest_s:g}), or a slow send could be repeated"
            )
        if self.circuit_max_delay_s < self.circuit_first_delay_s:
            raise ValueError(
                f"circuit_max_delay_s ({self.circuit_max_delay_s:g}) must not be below "
                f"circuit_first_delay_s ({self.circuit_first_delay_s:g})"
            )
        return self


class ScheduleSettings(_Section):
    timezone: str = "UTC"
    send_window_start: time = time(8, 0)
    send_window_end: time = time(20, 0)
    #: A first lesson without delay goes out on confirmation, even outside the window.
    welcome_at_once: bool = True
    #: How often the planner and the dispatcher run.
    tick_s: float = Field(default=1.0, gt=0)
    #: Enrollments one planner transaction looks at; passes repeat until none is due.
    planner_batch: int = Field(default=200, ge=1)

    @field_validator("timezone")
    @classmethod
    def _is_known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as Europe/London") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class SignupSettings(_Section):
    """The signup form's limits (docs/web.md)."""

    #: At most one confirmation email per address in this many seconds, however often the
    #: address is typed in: the form cannot be used to flood someone's inbox.
    confirmation_interval_s: float = Field(default=600, ge=0)
    #: Signups accepted per client address per hour, across every web worker.
    signups_per_ip_per_hour: int = Field(default=20, ge=1)
    #: At most this many confirmation emails to one address in 24 hours, whichever clients
    #: typed it in: the interval alone would still let a form send one every 10 minutes.
    confirmations_per_address_per_day: int = Field(default=3, ge=1)
    #: Pending addresses that never confirm are deleted after this many days.
    pending_max_age_days: float = Field(default=7, gt=0)
    #: Keep the IP address a signup came from in its consent record.
    store_ip: bool = True


class WebSettings(_Section):
    """The web app's edge: proxies, timeouts, the database wait (docs/web.md)."""

    #: Reverse proxies whose X-Forwarded-For, X-Forwarded-Proto and Forwarded headers are
    #: believed: addresses or networks such as "127.0.0.1" or "10.0.0.0/8". Empty: none, and
    #: the client is whoever connected.
    trusted_proxies: tuple[str, ...] = ()
    #: Seconds a connection has to send a request's headers, counted from when it opens or
    #: from the previous answer; so also how long an idle connection is kept.
    header_timeout_s: float = Field(default=10, gt=0)
    #: Seconds a request's body (16 KiB at most) has to arrive.
    body_timeout_s: float = Field(default=10, gt=0)
    #: Seconds a page waits for the database's write lock before answering "busy, please
    #: try again" (503) instead.
    database_wait_s: float = Field(default=10, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip())
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; expected entries such as "
                    "127.0.0.1, ::1 or 10.0.0.0/8"
                ) from None
        return value

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(entry.strip()) for entry in self.trusted_proxies)


class BounceSettings(_Section):
    """Where bounces go and what they do (docs/bounces.md)."""

    #: The envelope sender (Return-Path) of every message, as VERP: "bounces@example.org"
    #: makes each message's bounces+<delivery>-<signature>@example.org, so that a bounce
    #: names the delivery it is about. Empty: sender.address, whose bounces nobody reads.
    return_path: EmailStr | Literal[""] = ""
    #: Soft bounces (a full mailbox, a server down) of one address suppress it at this
    #: count within soft_window_days.
    soft_limit: int = Field(default=3, ge=1)
    soft_window_days: float = Field(default=14, gt=0)
    #: A course pauses once, of its mail sent in the last rate_window_days (and at least
    #: rate_min_sent messages), more than these shares bounced hard or drew a complaint; a
    #: newsletter issue once that many of all its copies did (or of those since a resume).
    max_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    max_complaint_rate: float = Field(default=0.001, gt=0, le=1)
    rate_window_days: float = Field(default=7, gt=0)
    rate_min_sent: int = Field(default=100, ge=1)

    @field_validator("return_path")
    @classmethod
    def _plain_local_part(cls, value: str) -> str:
        local = value.rpartition("@")[0]
        if value and (not value.isascii() or "+" in local):
            raise ValueError("must be an ASCII address without '+' (VERP adds its own)")
        return value


class InboundSettings(_Section):
    """The receiver of bounces, complaints and mailto unsubscribes (docs/bounces.md)."""

    #: `serve` starts the receiver too.
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=1, le=65535)
    #: Bigger messages are refused at DATA; reports quote the original message, not more.
    max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    #: The HTTP webhook of Mailgun's events; from NEWSLETTER_INBOUND__MAILGUN_SIGNING_KEY
    #: only. Unset: the webhook answers 404.
    mailgun_signing_key: SecretStr | None = None


class DkimSettings(_Section):
    """DKIM signing of every message (docs/dkim.md). Empty domain: no signature."""

    #: The signing domain (d=): sender.address's domain, or one it belongs to (DMARC).
    domain: str = ""
    selector: str = ""
    #: PEM private key, as `newsletter dkim keygen` writes it.
    key_path: Path | None = None
    #: Feedback-ID header's sender id (Gmail's feedback loop); empty: no header.
    feedback_id: str = ""

    @field_validator("feedback_id")
    @classmethod
    def _gmail_sender_id(cls, value: str) -> str:
        if value and not 5 <= len(value) <= 15:
            raise ValueError("must be 5 to 15 characters long (Gmail's rule for a sender id)")
        return value

    @field_validator("key_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("domain", "selector", "feedback_id")
    @classmethod
    def _dns_label_text(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError("may hold only letters, digits, dots, hyphens and underscores")
        return value

    @model_validator(mode="after")
    def _complete(self) -> DkimSettings:
        if self.domain and not (self.selector and self.key_path):
            raise ValueError("domain is set: selector and key_path are needed too")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.domain)


class PathSettings(_Section):
    lessons: Path = Path("lessons")
    templates: Path = Path("templates/emails")
    #: Runtime state: the SQLite file, the development outbox, previews, the generated secret.
    var: Path = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTING,
    )

    database: DatabaseSettings = DatabaseSettings()
    sender: SenderSettings
    site: SiteSettings = SiteSettings()
    smtp: SmtpSettings = SmtpSettings()
    sending: SendingSettings = SendingSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    signup: SignupSettings = SignupSettings()
    web: WebSettings = WebSettings()
    bounces: BounceSettings = BounceSettings()
    inbound: InboundSettings = InboundSettings()
    dkim: DkimSettings = DkimSettings()
    paths: PathSettings = PathSettings()
    #: Signs the links in emails; from NEWSLETTER_SECRET_KEY only.
    secret_key: SecretStr | None = None

    @field_validator("secret_key")
    @classmethod
    def _long_enough_to_sign(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "must be at least 16 characters; make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)

    @property
    def lessons_dir(self) -> Path:
        return self.paths.lessons

    @property
    def templates_dir(self) -> Path:
        return self.paths.templates

    @property
    def var_dir(self) -> Path:
        return self.paths.var


def default_config_path() -> Path:
    return Path(os.environ.get(f"{ENV_PREFIX}CONFIG", "config.toml"))


def load_settings(path: Path | None = None) -> Settings:
    """Read, merge and validate; every failure is one ConfigError line per bad key."""
    path = path or default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None

    for key in SECRET_KEYS:
        if _lookup(values, key) is not None:
            dotted = ".".join(key)
            raise ConfigError(
                f"{path}:{_line_of(text, key)}: {dotted}: secrets are not read from the file; "
                f"set {_env_name(key)} instead"
            )
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(
            "\n".join(_describe(error, path, text) for error in exc.errors())
        ) from None
    return _anchored(settings, path.resolve().parent)


def _anchored(settings: Settings, root: Path) -> Settings:
    """Relative paths (folders, a SQLite file) are taken from the config file's folder,
    so commands behave the same from any working directory."""
    folders = {
        name: value if value.is_absolute() else root / value
        for name, value in settings.paths.model_dump().items()
    }
    key_path = settings.dkim.key_path
    if key_path is not None and not key_path.is_absolute():
        key_path = root / key_path
    url = make_url(settings.database.url)
    database = url.database or ":memory:"
    if url.get_backend_name() == "sqlite" and database != ":memory:":
        url = url.set(database=str(root / database))  # an absolute path stays as it is
    return settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update=folders),
            "dkim": settings.dkim.model_copy(update={"key_path": key_path}),
            "database": settings.database.model_copy(
                update={"url": url.render_as_string(hide_password=False)}
            ),
        }
    )


def _describe(error: Any, path: Path, text: str) -> str:
    key = tuple(str(part) for part in error["loc"])
    dotted = ".".join(key)
    # Variable names match without regard to case, as pydantic-settings reads them.
    env_name = next((n for n in os.environ if n.upper() == _env_name(key)), None)
    if env_name is not None:
        where = f"environment variable {env_name}"
    else:
        # A missing key has no line of its own; point at its table instead.
        line = _line_of(text, key) or _line_of(text, key[:-1])
        where = f"{path}:{line}" if line else str(path)
    kind = error["type"]
    if kind == "missing":
        return f"{where}: {dotted}: missing; this key is required"
    if kind == "extra_forbidden":
        return f"{where}: {dotted}: unknown key{_known_keys_hint(key)}"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = "" if isinstance(error["input"], dict) else f" (got {error['input']!r})"
    return f"{where}: {dotted}: {message[0].lower()}{message[1:]}{got}"


def _known_keys_hint(key: tuple[str, ...]) -> str:
    model: type[BaseModel] = Settings
    for part in key[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = sorted(model.model_fields)
    return f" (expected one of: {', '.join(known)})"


def _env_name(key: tuple[str, ...]) -> str:
    return ENV_PREFIX + ENV_NESTING.join(part.upper() for part in key)


def _lookup(values: dict[str, Any], key: tuple[str, ...]) -> Any:
    node: Any = values
    for part in key:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


_TABLE = re.compile(r"^\s*\[([A-Za-z0-9_.\- ]+)\]\s*(#.*)?$")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def _line_of(text: str, key: tuple[str, ...]) -> int:
    """Best-effort line of `key` in the TOML text, for editors; 0 when not found."""
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if match := _TABLE.match(line):
            table = tuple(part.strip() for part in match.group(1).split("."))
            if table == key:
                return number
        elif (match := _ASSIGNMENT.match(line)) and (*table, match.group(1)) == key:
            return number
    return 0


def load_secret_key(settings: Settings) -> str:
    """NEWSLETTER_SECRET_KEY, or a key generated once into var/secret_key and kept there."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = settings.var_dir / "secret_key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then linked into place: a process starting at the same moment sees
    # either no key or the whole key, and exactly one key wins.
    draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text(encoding="ascii").strip()
