"""docker-compose.yml is correct for what exists: services, and commands the CLI knows."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from typer.testing import CliRunner

from mailer.cli import app
from mailer.config import Settings

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


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60}
    return float(value[:-1]) * units[value[-1]]


def test_compose_runs_the_scheduler_in_web_and_stops_it_gracefully() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    web, worker = compose["services"]["web"], compose["services"]["worker"]
    # `mailer serve` runs the web app, the scheduler and a worker unless told otherwise.
    assert web["command"][0] == "serve"
    assert not {"--no-scheduler", "--no-worker"} & set(web["command"])
    assert cli_accepts(["serve", "--scheduler", "--worker"])
    assert cli_accepts(["scheduler"]) and cli_accepts(["newsletters", "create"])
    # Docker waits longer than the service's own shutdown bound before it kills.
    shutdown = Settings.model_fields["shutdown_timeout_seconds"].default
    assert web["stop_signal"] == "SIGTERM"
    assert _seconds(web["stop_grace_period"]) > shutdown
    assert _seconds(worker["stop_grace_period"]) > shutdown
    assert "deploy" not in worker and "ports" not in worker  # scalable: no fixed host port


def test_env_example_names_only_real_settings() -> None:
    names = set()
    for line in (ROOT / "deploy" / "mailer.env.example").read_text().splitlines():
        match = re.match(r"^#?\s*(MAILER_[A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    fields = {f"MAILER_{name.upper()}" for name in Settings.model_fields}
    assert names and names <= fields, names - fields
    assert "MAILER_SESSION_IDLE_MINUTES" in names and "MAILER_SCHEDULER_GRACE_HOURS" in names
