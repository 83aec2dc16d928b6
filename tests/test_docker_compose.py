"""docker-compose.yml is correct for what exists: services, and commands the CLI knows."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from mailer.cli import app

ROOT = Path(__file__).resolve().parent.parent


def cli_accepts(args: list[str]) -> bool:
    """The command exists and takes these options (checked by parsing, not running)."""
    result = CliRunner().invoke(app, [*args, "--help"])
    return result.exit_code == 0


def test_compose_services_and_commands() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "migrate", "web", "worker"}
    assert "healthcheck" in services["db"] and "pgdata" in compose["volumes"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["worker"]["stop_signal"] == "SIGTERM"
    for name in ("migrate", "web", "worker"):
        service = services[name]
        assert service["env_file"] == "deploy/mailer.env"
        assert service["environment"]["MAILER_DATABASE_URL"].startswith("postgresql://")
        assert cli_accepts(service["command"]), service["command"]
    assert (ROOT / "deploy" / "mailer.env.example").is_file()
    assert not cli_accepts(["no-such-command"])
    assert not cli_accepts(["serve", "--no-such-flag"])
