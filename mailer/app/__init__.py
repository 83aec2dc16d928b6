"""The application layer: every action a person can take, as one plain function.

The command line (``mailer.cli``) and the workspace (``mailer.web``) are thin callers:
they parse input, call one of these functions, and print or render what it returns.
Each function opens its own transaction, takes the locks it needs, records what it
changed in the audit log, and raises an error of ``mailer.app.errors`` when it cannot
do what was asked. Nothing here imports Typer, Rich, FastAPI or Starlette.
"""
