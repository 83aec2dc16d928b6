"""Settings, read from ``MAILER_*`` environment variables and an optional TOML file.

Precedence, highest first: explicit arguments, environment, the config file
(``MAILER_CONFIG_FILE``, else ``./mailer.toml`` when present), defaults.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailer.briefings.parser import DEFAULT_BOILERPLATE

CONFIG_FILE_ENV = "MAILER_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "mailer.toml"
MIN_SECRET_KEY_LENGTH = 32


class ConfigError(RuntimeError):
    """The configuration cannot run what was asked of it."""


def config_file_path() -> Path:
    explicit = os.environ.get(CONFIG_FILE_ENV)
    return Path(explicit) if explicit else Path.cwd() / DEFAULT_CONFIG_FILE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAILER_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str = Field(default_factory=lambda: f"sqlite:///{Path.cwd() / 'mailer.db'}")
    transport: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    outbox_dir: Path = Field(default_factory=lambda: Path.cwd() / "outbox")
    base_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None
    # Key rotation: the first key signs, every one verifies (a JSON list in the
    # environment). MAILER_SECRET_KEY, when set too, verifies after these (and signs only
    # if this list is empty): set the new key here and links already in inboxes, signed
    # with the old one, keep working until it is dropped.
    secret_keys: tuple[SecretStr, ...] = ()
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str | None = None
    # Only for a deployment that verifies signatures elsewhere: /healthz and the logs
    # say loudly that it is off.
    sendgrid_webhook_verify: bool = True
    # How far a signed webhook's timestamp may be from now (replays are refused).
    sendgrid_webhook_tolerance_seconds: int = Field(default=600, ge=30, le=86_400)
    sendgrid_timeout_seconds: float = Field(default=30.0, gt=0)
    # Requests in flight at once per sender: overlaps SendGrid's answer with our work.
    sendgrid_concurrency: int = Field(default=4, ge=1, le=16)
    sendgrid_click_tracking: bool = False
    sendgrid_open_tracking: bool = False
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=587, gt=0, lt=65536)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_pool_size: int = Field(default=4, ge=1, le=64)
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    # VERP: an envelope sender per message, e.g. "bounces+{delivery_id}@news.example.org",
    # so a bounce names the delivery it is about.
    smtp_return_path: str | None = None
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: SecretStr | None = None  # PEM text, or a path to a PEM file
    templates_dir: Path | None = None
    batch_size: int = Field(default=1000, ge=1, le=1000)
    # Sign, build and post in a process of its own, beside the one that claims and
    # records: sending then uses a second core (1,000,000 recipients on SQLite in
    # 8.95 s against 12.86 s). Off: threads in the sending process.
    sender_process: bool = True
    # Messages per second one process hands to its transport; 0 means as fast as it goes.
    throttle_per_second: float = Field(default=0, ge=0)
    # An open batch older than this whose worker cannot be seen (another host, SQLite)
    # belongs to a worker that died; its rows
    # become `unknown` (never resent blindly).
    claim_timeout_seconds: int = Field(default=60, ge=5)
    # Paragraphs starting with one of these (case-insensitive regexes) are paywall or
    # log-in boilerplate and dropped from briefings. Set as a JSON list to replace them.
    boilerplate_patterns: tuple[str, ...] = DEFAULT_BOILERPLATE
    # Bounce policy: soft bounces (blocks, deferrals, full mailboxes) counted per
    # address; this many within the window suppress it.
    soft_bounce_limit: int = Field(default=3, ge=1)
    soft_bounce_window_days: int = Field(default=30, ge=1)
    # Provider events older than this are pruned (suppressions and ledger facts stay).
    event_retention_days: int = Field(default=400, ge=30)
    # Unknown deliveries younger than this are left for provider events to reconcile.
    reconcile_grace_hours: float = Field(default=2.0, gt=0)
    # The mailbox SMTP bounces (the VERP return path) are delivered to, for
    # `mailer bounces import --imap`.
    bounce_imap_host: str | None = None
    bounce_imap_port: int = Field(default=993, gt=0, lt=65536)
    bounce_imap_security: Literal["tls", "starttls", "none"] = "tls"
    bounce_imap_username: str | None = None
    bounce_imap_password: SecretStr | None = None
    bounce_imap_folder: str = "INBOX"
    # Workspace sign-in: a session ends after this long without a request, and in any
    # case this long after it began; a one-time sign-in link (a new account, a reset)
    # works for this long.
    session_idle_minutes: int = Field(default=480, ge=5)
    session_max_hours: int = Field(default=72, ge=1)
    sign_in_link_hours: int = Field(default=24, ge=1)
    # Public sign-ups (form and API) per client address per minute, shared by every web
    # process (counted in the database).
    # Raise it only where many real clients share one address (a benchmark on loopback).
    subscribe_per_client_per_minute: int = Field(default=10, ge=1)
    # Scheduler (mailer/schedule): how often it looks at the database for due slots; how
    # late a slot may still run after downtime (older ones are recorded as missed); how
    # long a leader's lease lasts unless renewed (a standby takes over within it).
    scheduler_tick_seconds: float = Field(default=20.0, ge=0.2, le=300)
    scheduler_grace_hours: float = Field(default=6.0, ge=0, le=168)
    scheduler_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # Service jobs run by the leading scheduler.
    scheduler_reap_seconds: float = Field(default=60.0, ge=1)
    scheduler_sync_minutes: float = Field(default=15.0, gt=0)
    scheduler_reconcile_minutes: float = Field(default=10.0, gt=0)
    scheduler_prune_hours: float = Field(default=6.0, gt=0)
    # SIGTERM: how long `mailer serve` / `mailer scheduler` wait for work in hand.
    shutdown_timeout_seconds: float = Field(default=30.0, ge=1, le=600)
    log_format: Literal["auto", "json", "console"] = "auto"
    # Unset: commands log WARNING and up (their output is for people), services INFO.
    log_level: str | None = None

    @field_validator("boilerplate_patterns")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(value):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {index} ({pattern!r}) is not a regex: {exc}") from exc
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value.upper()

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _production_needs_https(self) -> Settings:
        # Gmail and Yahoo ignore one-click unsubscribe URLs that are not https.
        if self.env == "production" and not self.base_url.startswith("https://"):
            raise ValueError("MAILER_BASE_URL must be https:// when MAILER_ENV=production")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def require_secret_key(self) -> bytes:
        """The signing key (the first of ``require_secret_keys``), or a ConfigError
        saying how to provide one."""
        return self.require_secret_keys()[0]

    def require_secret_keys(self) -> tuple[bytes, ...]:
        """Every key a signature may be checked against, the signing key first:
        ``MAILER_SECRET_KEYS`` in order, then ``MAILER_SECRET_KEY``."""
        named = [(f"MAILER_SECRET_KEYS[{i}]", key) for i, key in enumerate(self.secret_keys)]
        if self.secret_key is not None:
            named.append(("MAILER_SECRET_KEY", self.secret_key))
        keys: list[bytes] = []
        for name, secret in named:
            value = secret.get_secret_value()
            if not value:
                if name == "MAILER_SECRET_KEY":
                    continue  # as if unset
                raise ConfigError(f"{name} is empty")
            if self.env == "production" and len(value) < MIN_SECRET_KEY_LENGTH:
                raise ConfigError(
                    f"{name} is too short for production "
                    f"({len(value)} characters, at least {MIN_SECRET_KEY_LENGTH} needed)."
                )
            encoded = value.encode("utf-8")
            if encoded not in keys:
                keys.append(encoded)
        if not keys:
            raise ConfigError(
                "MAILER_SECRET_KEY is not set: it signs unsubscribe links. Set it to a long "
                "random string (python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                "or run `mailer demo`, which stores one in mailer.toml for local use. To "
                "rotate keys, list them in MAILER_SECRET_KEYS, the new one first."
            )
        return tuple(keys)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def get_settings() -> Settings:
    return Settings()


def ensure_local_secret_key(settings: Settings) -> tuple[Settings, bool]:
    """Give a development setup a signing key, stored in the config file.

    Only the demo calls this: production must bring its own key. Returns the
    settings to use and whether a key was generated.
    """
    if settings.secret_key is not None or settings.secret_keys:
        return settings, False
    if settings.env == "production":
        settings.require_secret_key()
    path = config_file_path()
    key = secrets.token_urlsafe(48)
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    separator = "" if not existing or existing.endswith("\n") else "\n"
    # Written with owner-only permissions: the key signs every unsubscribe link.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # O_CREAT's mode only applies to a new file; an existing one is tightened too.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        handle.write(f'{separator}secret_key = "{key}"\n')
    return settings.model_copy(update={"secret_key": SecretStr(key)}), True
