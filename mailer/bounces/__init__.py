"""Bounces: which deliveries failed, read from the mail the receiving systems sent back."""
