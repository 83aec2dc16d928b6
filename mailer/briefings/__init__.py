"""Briefings: the news items an edition is composed from."""
