"""Rendering: editions through Jinja2 and MJML once, then cheap per-recipient tokens."""
