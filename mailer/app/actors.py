"""Who is acting: a signed-in account, an operator at the command line, or the scheduler.

Every operation takes an ``Actor``: it decides what the actor may do (``require``) and
names them in the audit log. The command line acts as an administrator: whoever can run
it can read the configuration and the database anyway.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from mailer.accounts.models import Role
from mailer.app.errors import PermissionDenied

# What each role may do, from most to least.
_RANK = {Role.ADMIN: 2, Role.EDITOR: 1}


@dataclass(frozen=True)
class Actor:
    label: str  # "account:ed@example.org", "cli:alice", "scheduler"
    role: Role
    account_id: int | None = None

    @classmethod
    def account(cls, account_id: int, email: str, role: str) -> Actor:
        return cls(f"account:{email}", Role(role), account_id)

    @classmethod
    def cli(cls) -> Actor:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no name for this uid (containers)
            user = "unknown"
        return cls(f"cli:{user}", Role.ADMIN)

    @classmethod
    def system(cls, name: str = "scheduler") -> Actor:
        return cls(name, Role.ADMIN)

    @property
    def name(self) -> str:
        """The label without its kind: an address, a user name."""
        return self.label.partition(":")[2] or self.label

    def require(self, role: Role) -> None:
        if _RANK[self.role] < _RANK[role]:
            raise PermissionDenied(f"this needs the {role} role; {self.name} is {self.role}")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN
