"""Data layer: tables, engine and sessions, migrations."""
