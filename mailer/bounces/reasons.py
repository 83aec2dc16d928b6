"""Why a delivery failed, and whether that makes the address itself gone (hard).

One taxonomy for every way a failure reaches us (bounce mail, the SendGrid webhook, the
provider's suppression lists). The reason is decided from the words of the receiving
server first, since the same words mean the same thing across MTAs while the codes are
often generic (5.0.0, or none at all); the RFC 3463 status and the SMTP reply code decide
where the words say nothing we know. Pure functions, no I/O.

Only three reasons say that the address itself is gone: the user is unknown, the host or
domain does not exist (or publishes a null MX), the address has moved. Everything else is
soft: the mailbox exists or may, and the failure is about a quota, our message, our
sender, our reputation, or the network. A soft failure counts toward the soft-bounce
limit of the policy; only a hard one suppresses at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache


class BounceClass(StrEnum):
    HARD = "hard"  # the address is gone: stop mailing it
    SOFT = "soft"  # the address exists or may: count, and try again later


class BounceReason(StrEnum):
    USER_UNKNOWN = "user_unknown"
    HOST_UNKNOWN = "host_unknown"
    MOVED = "moved"
    MAILBOX_FULL = "mailbox_full"
    TOO_BIG = "too_big"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    SPAM = "spam"
    POLICY = "policy"
    SENDER_REFUSED = "sender_refused"
    DISABLED = "disabled"
    RATE_LIMITED = "rate_limited"
    SYSTEM_ERROR = "system_error"
    NOT_BOUNCE = "not_bounce"

    @property
    def label(self) -> str:
        return LABELS[self]

    @property
    def hard(self) -> bool:
        return self in HARD_REASONS


LABELS: dict[BounceReason, str] = {
    BounceReason.USER_UNKNOWN: "user unknown",
    BounceReason.HOST_UNKNOWN: "host or domain unknown",
    BounceReason.MOVED: "address moved",
    BounceReason.MAILBOX_FULL: "mailbox full",
    BounceReason.TOO_BIG: "message too big",
    BounceReason.EXPIRED: "expired",
    BounceReason.BLOCKED: "blocked",
    BounceReason.SPAM: "spam or content",
    BounceReason.POLICY: "policy",
    BounceReason.SENDER_REFUSED: "sender refused",
    BounceReason.DISABLED: "account disabled",
    BounceReason.RATE_LIMITED: "rate limited",
    BounceReason.SYSTEM_ERROR: "system error",
    BounceReason.NOT_BOUNCE: "not a bounce",
}


def reason_label(value: str | None) -> str | None:
    """The words for a stored reason ("user_unknown" -> "user unknown"); None for none,
    and a value from outside the taxonomy as it is."""
    if not value:
        return None
    try:
        return LABELS[BounceReason(value)]
    except ValueError:
        return value


HARD_REASONS = frozenset({BounceReason.USER_UNKNOWN, BounceReason.HOST_UNKNOWN, BounceReason.MOVED})


def _words(*patterns: str) -> re.Pattern[str]:
    # A space in a pattern is any run of white space: reports wrap their lines anywhere.
    joined = "|".join(f"(?:{p})" for p in patterns)
    joined = joined.replace(" ?", r"\s*").replace(" ", r"\s+")
    return re.compile(joined, re.IGNORECASE)


# Ordered: the first reason whose words appear wins. Reasons about our sending (rate,
# reputation, authentication) come before the recipient's, because a refusal of our IP
# often names the recipient too ("<ann@x>: Client host rejected: blocked using ...");
# a full mailbox before an unknown user, since "mailbox unavailable" covers both.
_TEXT: tuple[tuple[BounceReason, re.Pattern[str]], ...] = (
    (
        BounceReason.RATE_LIMITED,
        _words(
            r"too many (?:connections|concurrent|messages|recipients|sessions|mails)",
            r"rate limit",
            r"rate[- ]limited",
            r"sending rate",
            r"too fast",
            r"try again later.{0,40}(?:volume|too many)",
            r"unexpected volume",
            r"exceeded (?:the )?(?:maximum )?(?:number|rate|sending)",
            r"has sent to too many",
            r"throttl",
            r"connection (?:limit|count)",
            r"too much mail",
            r"rcpt limit",
        ),
    ),
    (
        BounceReason.SENDER_REFUSED,
        _words(
            r"\bspf\b",
            r"\bdkim\b",
            r"\bdmarc\b",
            r"sender (?:address |domain )?(?:rejected|refused|denied|verify failed|not allowed)",
            r"sender address (?:has )?(?:null mx|does not exist|must exist)",
            r"domain of (?:the )?sender address",
            r"sender domain (?:must|does not|doesn't)",
            r"(?:sender|from) .{0,40}(?:not verified|unverified)",
            r"address is not verified",
            r"mail from .{0,80} rejected",
            r"in reply to mail from",
            r"unauthenticated (?:email|sender|mail)",
            r"sender is unauthenticated",
            r"authentication (?:required|failed)",
            r"authentication checks? failed",
            r"not authenticated",
            r"not (?:a )?member of",
            r"(?:do not|don't) have (?:the )?(?:required )?permissions? to post",
            r"permission to post",
            r"berechtigung(?:en)? .{0,60}(?:zu posten|zu senden)",
            r"pas autoris[ée]e? .{0,20}envoyer",
            r"must (?:use|have) a valid sender",
            r"invalid sender",
            r"bad sender",
            r"sender .{0,20}blacklisted",
        ),
    ),
    (
        BounceReason.POLICY,
        _words(
            r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited)",
            r"not (?:configured|permitted|allowed) to relay",
            r"we do not relay",
            r"no relaying",
            r"unable to relay",
        ),
    ),
    (
        BounceReason.BLOCKED,
        _words(
            r"blocked using",
            r"black ?list",
            r"block ?list",
            r"\bdnsbl\b",
            r"\brbl\b",
            r"spamhaus",
            r"spamcop",
            r"barracuda",
            r"client host (?:\[[^\]]*\] )?(?:rejected|blocked|refused)",
            r"client host blocked",
            r"ip address .{0,40}(?:blocked|rejected|listed|refused|bloqu)",
            r"adresse ip .{0,40}bloqu",
            r"\b(?:your|sending|source|the) ip\b.{0,60}"
            r"(?:block|reject|refus|listed|bloqu|reputation)",
            r"\bip\b.{0,30}\bblock",
            r"reputation",
            r"reverse (?:dns|lookup)",
            r"\bptr\b",
            r"rdns",
            r"without a valid (?:sender domain|hostname|reverse)",
            r"refused to talk to me",
            r"(?:helo|ehlo|my name|hostname).{0,30}(?:was )?(?:rejected|invalid|refused|not valid)",
            r"not accepting connections",
            r"connection refused",
            r"access denied.{0,40}(?:\bip\b|banned|block)",
            r"banned",
            r"poor reputation",
            r"listed (?:at|in|on|by)",
            r"temporarily deferred",
            r"blocked for spam",
        ),
    ),
    (
        BounceReason.MAILBOX_FULL,
        _words(
            r"mailbox (?:is )?full",
            r"mail ?box.{0,20}(?:full|exceeded|over)",
            r"over (?:the )?quota",
            r"quota (?:exceeded|full)",
            r"exceed(?:ed|s)? (?:the |his |her |their )?(?:storage|quota|mailbox)",
            r"\bquota\b",
            r"insufficient (?:disk )?(?:space|storage)",
            r"(?:storage|disk) (?:space |quota )?(?:full|exceeded)",
            r"out of (?:disk )?space",
            r"not enough (?:disk )?space",
            r"full mailbox",
            r"mailfolder is full",
            r"boite (?:aux lettres )?pleine",
            r"too (?:much|many) (?:mail|messages) (?:in|on) (?:the |this )?(?:mailbox|account)",
        ),
    ),
    (
        BounceReason.TOO_BIG,
        _words(
            r"(?:message|mail|email)(?: size)? (?:is )?too (?:large|big|long)",
            r"too large",
            r"size (?:limit|exceeds)",
            r"exceeds? (?:the )?(?:fixed )?(?:maximum|max|size|message size|allowed)",
            r"length exceeds",
            r"maximum (?:message )?size",
            r"message (?:size|length) exceeds",
            r"recipsizelimit",
        ),
    ),
    (
        BounceReason.DISABLED,
        _words(
            r"account (?:has been |is )?(?:disabled|suspended|inactive|deactivated|locked|"
            r"frozen|expired|blocked|discontinued)",
            r"(?:account|mailbox) (?:is )?(?:temporarily |currently )?"
            r"(?:disabled|suspended|inactive|frozen|locked|deactivated)",
            r"(?:disabled|suspended|inactive|deactivated|frozen|locked) (?:account|mailbox|user)",
            r"account that you tried to reach is (?:disabled|inactive)",
            r"mailbox (?:is )?(?:not active|inactive)",
            r"user (?:account )?(?:is )?(?:disabled|suspended|inactive)",
            r"compte du destinataire est bloque",
            r"recipient account is (?:blocked|disabled)",
            r"\bdisabled ?user\b",
            r"has been disabled",
            r"disabled (?:recipient|address)",
            r"account expired",
            r"no longer active",
            r"\bsuspended\b",
        ),
    ),
    (
        BounceReason.MOVED,
        _words(
            r"no longer (?:on|at) (?:this |the )?server",
            r"not our (?:user|customer)",
            r"has moved",
            r"user has moved",
            r"address (?:has )?changed",
            r"no longer (?:available|valid|with us)",
        ),
    ),
    (
        BounceReason.SPAM,
        _words(
            r"\bspam\b",
            r"\bvirus\b",
            r"malware",
            r"infected",
            r"junk mail",
            r"content (?:filter|rejected|policy|presents)",
            r"message content",
            r"its content",
            r"suspicious",
            r"phishing",
            r"\bscore\b",
            r"\buce\b",
            r"unsolicited",
            r"bulk mail",
            r"header error",
            r"content error",
            r"not (?:rfc|compliant)",
            r"rfc ?(?:5322|2822|822) ",
            r"malformed",
            r"attachment",
        ),
    ),
    (
        BounceReason.HOST_UNKNOWN,
        _words(
            r"host (?:or domain name )?(?:unknown|not found)",
            r"unknown (?:host|domain)",
            r"no such (?:domain|host)",
            r"domain (?:name )?(?:not found|does not exist|doesn't exist|unknown|"
            r"is not reachable|not reachable)",
            r"domain .{0,60}(?:does not exist|doesn't exist|not found)",
            r"null mx",
            r"no smtp service",
            r"does not accept mail",
            r"(?:doesn't|does not) receive (?:e-?mail|mail)",
            r"not accepting (?:network )?messages",
            r"unrouteable (?:mail )?domain",
            r"unroutable",
            r"no (?:mx|mail exchanger)",
            r"mx (?:record )?(?:not found|lookup failed)",
            r"name or service not known",
            r"nxdomain",
            r"dns (?:lookup )?(?:failure|error).{0,80}not found",
            r"host .{0,60}not found",
            r"invalid domain",
            r"unknown mail domain",
            r"bad destination (?:system|host)",
            r"unable to route",
            r"no route to domain",
            r"domain is not (?:valid|in use)",
        ),
    ),
    (
        BounceReason.USER_UNKNOWN,
        _words(
            r"user(?:name)? (?:is )?unknown",
            r"unknown (?:local[- ])?(?:user|recipient|mailbox|address|alias)",
            r"no such (?:user|mailbox|recipient|address|account|person|local user)",
            r"(?:user|recipient|mailbox|address|account|addressee) "
            r"(?:does not|doesn't|did not|not) exist",
            r"(?:user|recipient|mailbox|address|account) (?:is )?"
            r"(?:invalid|not found|not known|unavailable|inexistent|nonexistent)",
            r"does not exist",
            r"doesn't exist",
            r"not (?:a )?(?:valid|known) (?:user|recipient|mailbox|address)",
            r"invalid (?:recipient|mailbox|address|user)",
            r"recipient not (?:found|accepted)",
            r"(?:user|mailbox|recipient) not (?:found|known|listed|local)",
            r"user not exist",
            r"no mailbox",
            r"unknown or illegal alias",
            r"invalid .{0,20}user ?id",
            r"(?:doesn't|does not) have an? .{0,40}account",
            r"(?:check|verify) (?:if|that|whether) (?:the )?(?:e-?mail )?address is correct",
            r"addresses? (?:is )?not valid",
            r"bad destination mailbox",
            r"no account",
            r"unrouteable address",
            r"undeliverable address",
            r"not a valid mailbox",
            r"nicht (?:vorhanden|bekannt)",
            r"inconnu",
            r"n'existe pas",
        ),
    ),
    (
        BounceReason.EXPIRED,
        _words(
            r"retry (?:timeout|time|period) (?:exceeded|reached|expired)",
            r"failing for a long time",
            r"for (?:the )?(?:past|last) \d+ (?:hours|days)",
            r"(?:could|can) ?not (?:be )?(?:sent|delivered) for \d+",
            r"(?:in|on) the queue too long",
            r"maximum (?:queue|delivery) time",
            r"timed? ?out",
            r"time limit",
            r"too long (?:in|on) (?:the )?queue",
            r"(?:could not|couldn't|unable to) be delivered (?:with)?in",
            r"has not been delivered",
            r"delivery (?:time )?expired",
            r"expired",
            r"giving up",
            r"gave up",
            r"undeliverable for \d+",
            r"have been unable to deliver",
            r"deferred for",
            r"delivery attempts? (?:will continue|failed repeatedly)",
        ),
    ),
)
# Words so general that a specific status or a weaker hint about the recipient says
# more: general policy words are read only after the status, system errors before it.
_POLICY_WORDS: tuple[tuple[BounceReason, re.Pattern[str]], ...] = (
    (
        BounceReason.POLICY,
        _words(
            r"policy",
            r"not (?:authorized|allowed|permitted)",
            r"prohibited",
            r"access denied",
            r"refused",
            r"\brejected\b",
            r"administrative",
            r"denied",
            r"restricted",
        ),
    ),
)
_SYSTEM_WORDS: tuple[tuple[BounceReason, re.Pattern[str]], ...] = (
    (
        BounceReason.SYSTEM_ERROR,
        _words(
            r"system error",
            r"internal (?:server |system )?error",
            r"loop",
            r"too many hops",
            r"\bon hold\b",
            r"protocol error",
            r"hop count",
            r"service (?:currently )?(?:not available|unavailable|refused)",
            r"temporar(?:y|ily) (?:failure|unavailable|error|problem)",
            r"try (?:again )?later",
            r"connection (?:lost|closed|reset|dropped)",
            r"lost connection",
            r"no route to host",
            r"network (?:error|unreachable)",
            r"local (?:delivery )?error",
            r"mailer error",
            r"configuration error",
            r"misconfigured",
            r"improper sequence",
            r"command (?:parameter )?not (?:implemented|recognized)",
            r"syntax error",
            r"unavailable",
        ),
    ),
)

# Words that a refusal of anything at RCPT TO carries ("<ann@x>: Recipient address
# rejected: Access denied"): the user is unknown only if nothing more particular is said,
# neither in words nor in a specific status.
_WEAK_USER_UNKNOWN = _words(
    r"recipient (?:address )?rejected",
    r"mailbox unavailable",
    r"address rejected",
    r"not listed in",
    r"unable to find",
)

# RFC 3463 subject.detail -> reason, where the status is specific.
_STATUS: dict[str, BounceReason] = {
    "1.1": BounceReason.USER_UNKNOWN,
    "1.2": BounceReason.HOST_UNKNOWN,
    "1.3": BounceReason.USER_UNKNOWN,
    "1.4": BounceReason.USER_UNKNOWN,
    "1.6": BounceReason.MOVED,
    "1.7": BounceReason.SENDER_REFUSED,
    "1.8": BounceReason.SENDER_REFUSED,
    "1.10": BounceReason.HOST_UNKNOWN,
    "2.1": BounceReason.DISABLED,
    "2.2": BounceReason.MAILBOX_FULL,
    "2.3": BounceReason.TOO_BIG,
    "2.4": BounceReason.SYSTEM_ERROR,
    "3.1": BounceReason.SYSTEM_ERROR,
    "3.2": BounceReason.HOST_UNKNOWN,  # "system not accepting network messages"
    "3.4": BounceReason.TOO_BIG,
    "3.5": BounceReason.SYSTEM_ERROR,
    "4.2": BounceReason.SYSTEM_ERROR,
    "4.3": BounceReason.SYSTEM_ERROR,
    "4.4": BounceReason.HOST_UNKNOWN,  # "unable to route"
    "4.5": BounceReason.SYSTEM_ERROR,
    "4.6": BounceReason.SYSTEM_ERROR,
    "4.7": BounceReason.EXPIRED,
    "5.3": BounceReason.RATE_LIMITED,  # too many recipients
    "6.0": BounceReason.SPAM,
    "6.1": BounceReason.SPAM,
    "7.1": BounceReason.POLICY,
    "7.7": BounceReason.SPAM,
    "7.13": BounceReason.DISABLED,
    "7.23": BounceReason.SENDER_REFUSED,
    "7.24": BounceReason.SENDER_REFUSED,
    "7.25": BounceReason.BLOCKED,  # no PTR for our IP
    "7.26": BounceReason.SENDER_REFUSED,
    "7.27": BounceReason.HOST_UNKNOWN,  # the recipient's domain has a null MX
    "7.509": BounceReason.SENDER_REFUSED,
}
# Statuses whose words are more specific than the words of the text beside them: a server
# that says 5.2.2 and "user unknown" has a mailbox to be full.
_STATUS_FIRST = frozenset({"1.6", "1.10", "2.2", "2.3", "3.4", "7.26", "7.27"})
_CLASS = {
    "1": BounceReason.USER_UNKNOWN,
    "2": BounceReason.MAILBOX_FULL,
    "3": BounceReason.SYSTEM_ERROR,
    "4": BounceReason.SYSTEM_ERROR,
    "5": BounceReason.SYSTEM_ERROR,
    "6": BounceReason.SPAM,
    "7": BounceReason.POLICY,
}
# Only failures: a 2.x.x status or a 2xx reply in a transcript is a step that succeeded
# ("250 2.1.5 Ok" to RCPT TO before the 451 that DATA got).
_STATUS_CODE = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_REPLY_CODE = re.compile(r"(?<![\d.])([45])[0-5]\d(?![\d.])")
# A status right after a reply code is the replying server's own; a bare one before it
# is often the reporter's summary ("5.1.0 - Unknown address error 550-'5.7.1 ...").
_REPLY_STATUS = re.compile(r"(?<![\d.])[45][0-5]\d[ -]['\"#]?([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# "User unknown" with the address slot of the reply left empty ("550 : User unknown",
# "550: : User unknown"): a canned refusal that looked nothing up. Mobile carriers answer
# so when the reader's own receive filter refuses the sender; an address they do not
# know is named ("550 <ann@x>: User unknown").
_NAMELESS_UNKNOWN = re.compile(
    r"(?<![\d.])[45][0-5]\d[ :-]\s*(?:<>\s*)?:\s*(?:user unknown|unknown user)\b",
    re.IGNORECASE,
)
# The SMTP command a refusal answered, as MTAs write it: Postfix "(in reply to RCPT TO
# command)" after the reply, Sendmail ">>> DATA" and Exim "after MAIL FROM:" before it.
_REPLY_TO_COMMAND = re.compile(
    r"in\s+reply\s+to\s+(?:the\s+)?(?:end\s+of\s+)?(mail|rcpt|data|helo|ehlo|connect)\b",
    re.IGNORECASE,
)
_COMMAND_BEFORE = re.compile(
    r"(?:>>>\s*|\bafter (?:the )?(?:end of )?|did not like our (?:final )?|\bfor (?:the )?)"
    r"(mail from|rcpt to|data|helo|ehlo)\b",
    re.IGNORECASE,
)
# A permanent or temporary refusal: the reply code at the start of a reply line.
_REFUSAL = re.compile(r"(?:^|<<<\s*|:\s+|said:\s*)[45][0-5]\d(?:[ -]|$)", re.MULTILINE)
# Reasons that name the recipient, but that a refusal of our MAIL FROM does not mean.
_ABOUT_RECIPIENT = frozenset(
    {
        BounceReason.USER_UNKNOWN,
        BounceReason.HOST_UNKNOWN,
        BounceReason.MOVED,
        BounceReason.DISABLED,
        BounceReason.POLICY,
        BounceReason.SYSTEM_ERROR,
    }
)


_WORDS_LIMIT = 4000
_CONTEXT_LIMIT = 16000


@dataclass(frozen=True)
class Verdict:
    reason: BounceReason
    kind: BounceClass
    status: str | None  # the RFC 3463 code the verdict read, if any


def status_of(text: str) -> str | None:
    """The RFC 3463 failure code in ``text`` (not part of an IP address or a version):
    the first that follows an SMTP reply code, else the first."""
    match = _REPLY_STATUS.search(text) or _STATUS_CODE.search(text)
    return ".".join(match.groups()) if match else None


def reply_of(text: str) -> str | None:
    """The first SMTP basic reply code in ``text`` ("550"), if it has one."""
    match = _REPLY_CODE.search(text)
    return match.group(0) if match else None


def reason_from_text(text: str) -> BounceReason | None:
    """The reason the words of ``text`` give, most particular first; None if none."""
    return _first(_TEXT, text) or _first(_POLICY_WORDS, text) or _first(_SYSTEM_WORDS, text)


def _first(
    tiers: tuple[tuple[BounceReason, re.Pattern[str]], ...], text: str
) -> BounceReason | None:
    for reason, pattern in tiers:
        if pattern.search(text):
            return reason
    return None


# The command written under a label after the reply ("-------SMTP command\nDATA").
_COMMAND_LABEL = re.compile(
    r"smtp command\s*[-:=]*\s*(mail from|rcpt to|mail|rcpt|data|helo|ehlo)\b", re.IGNORECASE
)


def command_of(text: str) -> str | None:
    """The SMTP command the first refusal in ``text`` answered ("mail", "rcpt",
    "data"), where the text says: named just before the reply code (Sendmail's ">>> DATA"
    line, Exim's "after RCPT TO:<...>:") or just after it ("in reply to ... command")."""
    for reply in _REFUSAL.finditer(text):
        after = _REPLY_TO_COMMAND.search(text, reply.end(), reply.end() + 300)
        if after is not None and "\n\n" not in text[reply.end() : after.start()]:
            return after.group(1).lower()
        label = _COMMAND_LABEL.search(text, reply.end(), reply.end() + 300)
        if label is not None:
            return label.group(1).split()[0].lower()
        window = text[max(0, reply.start() - 160) : reply.start()]
        before = list(_COMMAND_BEFORE.finditer(window))
        if before:
            return before[-1].group(1).split()[0].lower()
    return None


def classify(
    status: str | None,
    diagnostic: str = "",
    *,
    context: str = "",
    transcript: str | None = None,
    temporary: bool | None = None,
) -> Verdict:
    """The reason and class of one failure.

    ``status`` is the RFC 3463 code the report gave (``None`` if none), ``diagnostic``
    the remote server's words about this recipient, ``context`` the rest of what the
    report says (read only when the diagnostic says nothing we know), ``transcript`` the
    SMTP exchange about this recipient where the command refused is read (``context``
    when not given). ``temporary`` is
    True for a failure the sender will retry (a DSN's ``delayed``), False for one it has
    given up on, None when the report does not say: then the codes decide.

    The order: a status more particular than any words (5.2.2: the mailbox exists to be
    full); the words; a specific status; words any refusal at RCPT TO carries; the rest
    of the report (with the code written beside its words there). Then corrections of
    "user unknown" by how it was said: under an X.7.x status, or with the reply's
    address slot left empty ("550 : User unknown"), it is a filter's refusal. Then by
    the SMTP command refused: a refusal of our MAIL FROM is about our sender; an
    "unknown user" answered to DATA, after the server had accepted the recipient and
    read the message, is a content filter's verdict (unless a specific status other
    than a mailbox status says otherwise).
    Hard only for user unknown, host unknown and moved, and only when permanent.
    """
    # What a server says about a failure fits in a few lines; reading more only costs.
    diagnostic, context = diagnostic[:_WORDS_LIMIT], context[:_CONTEXT_LIMIT]
    if transcript is not None:
        transcript = transcript[:_CONTEXT_LIMIT]
    status = _clean_status(status) or status_of(diagnostic)
    reply = reply_of(diagnostic)
    detail, by_status = _detail(status)
    reason: BounceReason | None = None
    if detail in _STATUS_FIRST:
        reason = _STATUS[detail]
    if reason is None:
        reason = _first(_TEXT, diagnostic) or _first(_SYSTEM_WORDS, diagnostic)
    if reason is None and by_status is not None:
        # A specific status says more than words any refusal at RCPT TO carries.
        reason = _STATUS.get(detail or "")
    if reason is None and _WEAK_USER_UNKNOWN.search(diagnostic):
        reason = BounceReason.USER_UNKNOWN
    if reason is None:
        reason = by_status
    if reason is None:
        reason = _first(_POLICY_WORDS, diagnostic)
    if reason is None:
        reason = _context_reason(context)
        if reason is not None and status is None:
            # The words came from the report's own text: so does the code beside them.
            status = status_of(context)
            detail, by_status = _detail(status)
    if reason is BounceReason.USER_UNKNOWN and by_status is not None and detail[:2] == "7.":
        # X.7.x is security or policy; X.7.1 is "delivery not authorized", what per-host
        # or per-recipient filtering answers (RFC 3463). A server that knew the user to
        # be unknown would say X.1.1: "User unknown" under a 5.7.1 is a filter's word.
        reason = by_status
    elif reason is BounceReason.USER_UNKNOWN and (
        _NAMELESS_UNKNOWN.search(diagnostic)
        or (not diagnostic.strip() and _NAMELESS_UNKNOWN.search(context))
    ):
        reason = BounceReason.POLICY
    if reason is None:
        reason = BounceReason.EXPIRED if temporary else BounceReason.SYSTEM_ERROR
    command = command_of(diagnostic) or _command(context if transcript is None else transcript)
    if command == "mail" and reason in _ABOUT_RECIPIENT:
        reason = BounceReason.SENDER_REFUSED
    elif (
        command == "data"
        and reason is BounceReason.USER_UNKNOWN
        and (by_status is None or detail.startswith("2."))
    ):
        reason = BounceReason.SPAM
    if temporary is None:
        temporary = (status or reply or "5")[0] == "4"
    hard = reason.hard and not temporary
    return Verdict(reason, BounceClass.HARD if hard else BounceClass.SOFT, status)


def _detail(status: str | None) -> tuple[str, BounceReason | None]:
    """The subject.detail of a status ("1.1" of 5.1.1), and the reason it gives where it
    is specific (not X.0.x), else None."""
    detail = ".".join(status.split(".")[1:]) if status else ""
    if not detail or detail.startswith("0."):
        return detail, None
    return detail, _STATUS.get(detail) or _CLASS.get(detail[0])


# A report's own words are read once for all the recipients it names.
@lru_cache(maxsize=32)
def _context_reason(context: str) -> BounceReason | None:
    found = _first(_TEXT, context) or _first(_SYSTEM_WORDS, context)
    if found is None and _WEAK_USER_UNKNOWN.search(context):
        found = BounceReason.USER_UNKNOWN
    return found or _first(_POLICY_WORDS, context)


@lru_cache(maxsize=32)
def _command(text: str) -> str | None:
    return command_of(text)


def blocked_verdict(status: str | None, diagnostic: str = "") -> Verdict:
    """A refusal a provider files as a block (of our IP, domain or content): soft, for
    the reason its words give, "blocked" when they say nothing more particular."""
    verdict = classify(status, diagnostic, temporary=True)
    if verdict.reason.hard or verdict.reason in (BounceReason.SYSTEM_ERROR, BounceReason.EXPIRED):
        return Verdict(BounceReason.BLOCKED, BounceClass.SOFT, verdict.status)
    return verdict


def _clean_status(status: str | None) -> str | None:
    return status_of(status) if status else None
