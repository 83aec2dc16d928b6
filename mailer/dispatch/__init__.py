"""Dispatch: the delivery ledger and the loop that drains it through a transport."""
