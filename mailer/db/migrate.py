"""Schema migrations through Alembic, driven from code (``mailer db upgrade``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser interpolation syntax; URLs may contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def for_database(dialect_name: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` for a database of ``dialect_name``: leaves out of a
    comparison with the models what they create on another database only (an index
    declared with ``ddl_if(dialect=…)``, such as the names' trigram index)."""

    def include(item: object, name: str | None, kind: str, reflected: bool, other: object) -> bool:
        # DDLIf is what SQLAlchemy keeps of ddl_if(); no public accessor exists.
        condition = getattr(item, "_ddl_if", None)
        only_on = getattr(condition, "dialect", None)
        if only_on is None:
            return True
        return dialect_name in ((only_on,) if isinstance(only_on, str) else only_on)

    return include
