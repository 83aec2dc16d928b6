"""Where the editor-owned email templates live, and the Jinja environment for them."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

import mailer

# A source checkout (or editable install) uses the top-level templates/ folder;
# a wheel carries a copy inside the package.
_CHECKOUT_TEMPLATES = Path(mailer.__file__).resolve().parent.parent / "templates"
_PACKAGED_TEMPLATES = Path(mailer.__file__).resolve().parent / "_templates"


def templates_dir(configured: Path | None = None) -> Path:
    if configured is not None:
        return configured
    if _CHECKOUT_TEMPLATES.is_dir():
        return _CHECKOUT_TEMPLATES
    return _PACKAGED_TEMPLATES


def email_environment(directory: Path) -> Environment:
    return Environment(
        loader=FileSystemLoader(directory),
        # The MJML template is HTML in all but name; the .txt twin must not be escaped.
        autoescape=select_autoescape(enabled_extensions=("mjml", "html"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
