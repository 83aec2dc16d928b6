"""Workspace accounts: who may sign in, their sessions, sign-in throttling, the audit log."""
