"""Editions: composing a newsletter's daily issue from ready briefings."""
