"""Settings come from MAILER_* variables and the config file; secrets stay secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailer.config import ConfigError, Settings, ensure_local_secret_key
from mailer.logs import JsonFormatter


def test_environment_and_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "mailer.toml"
    config.write_text('base_url = "https://from-file.example.org/"\nbatch_size = 500\n')
    monkeypatch.setenv("MAILER_CONFIG_FILE", str(config))
    monkeypatch.setenv("MAILER_BATCH_SIZE", "250")
    settings = Settings()
    assert settings.base_url == "https://from-file.example.org"
    assert settings.batch_size == 250  # the environment wins over the file
    assert settings.transport == "outbox"


def test_secret_key_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MAILER_SECRET_KEY is not set"):
        Settings().require_secret_key()
    production = {"env": "production", "base_url": "https://news.example.org"}
    with pytest.raises(ConfigError, match="too short"):
        Settings(**production, secret_key="short").require_secret_key()
    with pytest.raises(ConfigError):
        ensure_local_secret_key(Settings(**production))
    with pytest.raises(ValueError, match="must be https"):
        Settings(env="production", base_url="http://news.example.org")

    config = tmp_path / "absent.toml"
    settings, generated = ensure_local_secret_key(Settings())
    assert generated and config.stat().st_mode & 0o077 == 0
    assert Settings().require_secret_key() == settings.require_secret_key()
    assert ensure_local_secret_key(Settings())[1] is False


def test_secrets_are_not_logged_or_printed() -> None:
    settings = Settings(secret_key="s3cret-value", sendgrid_api_key="SG.very-secret")
    assert "s3cret-value" not in repr(settings) and "SG.very-secret" not in repr(settings)
    record = logging.makeLogRecord(
        {"msg": "configured", "api_key": "SG.very-secret", "edition_id": 3}
    )
    line = JsonFormatter().format(record)
    assert "SG.very-secret" not in line and '"edition_id": 3' in line


def test_boilerplate_patterns_are_configurable_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILER_BOILERPLATE_PATTERNS", '["members only\\\\b", "sponsored:"]')
    assert Settings().boilerplate_patterns == ("members only\\b", "sponsored:")
    monkeypatch.setenv("MAILER_BOILERPLATE_PATTERNS", '["(unclosed"]')
    with pytest.raises(ValueError, match="pattern 0"):
        Settings()
