"""What to do after a send attempt: one SendReport in, one Decision out. Pure: no I/O and no
clock; the caller passes `now` and a Random.

A refusal is first blamed on a party, from the SMTP stage it came at, the reply code and
the enhanced status (RFC 3463):

- **The relay or our account** (the session: connect, greeting, EHLO, TLS, AUTH, MAIL FROM):
  - a dropped connection, garbage, any 4xx, or a 421 at any stage (RFC 5321 §3.8: the
    relay is closing the channel): RELAY_UNAVAILABLE. The relay's circuit breaker counts
    it; the delivery waits for the relay, and the attempt is not counted against it.
  - a 5xx, an authentication code (530, 534, 535, 538; RFC 4954) at any stage, an enhanced
    status about the sender's address (x.1.7, x.1.8) at any stage, or a relay that offers
    no AUTH: SENDER_BLOCKED. Sending pauses and the operator is told; nobody is marked.
  - except a size refusal at MAIL FROM (552 without an enhanced status, 5.3.4 or 5.2.3;
    RFC 1870): that message is too big for the relay, whoever receives it. FAILED, with
    `too_big` set.
- **One recipient** (a refusal at RCPT, or after DATA, for this message):
  - any 4xx, no reply, a 5xx with x.2.2 (mailbox full, which may empty), or a bare 552
    (RFC 5321 §4.5.3.1.10 and the "storage allocation" of 552 after DATA: temporary):
    RETRY after an exponential backoff, `first_delay_s * factor ** (attempts - 1)` capped
    at `max_delay_s` and spread by +-`jitter`; a retry that would fall after
    `first_attempt_at + give_up_after_s` is FAILED instead ("gave up").
  - a 5xx with x.7.x (policy: the recipient's server does not take our mail): FAILED, with
    `policy` set. The subscriber is never suppressed for it; the dispatcher pauses sending
    only if such refusals become a large share of recent attempts.
  - a 5xx at RCPT, or x.1.x after DATA (the address is bad): BOUNCED; the address is
    suppressed.
  - any other 5xx after DATA (this content refused; 5.3.4 too big): FAILED.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from newsletter.delivery.transport import SendReport, Stage
from newsletter.words import plural


class Verdict(StrEnum):
    SENT = "sent"
    #: Transient for this recipient: try again at `retry_at`.
    RETRY = "retry"
    #: Permanent, the recipient's address is bad: mark the subscriber bounced and suppress it.
    BOUNCED = "bounced"
    #: Permanent for this message but not the subscriber's fault (content or policy refused,
    #: too big, gave up).
    FAILED = "failed"
    #: The relay refuses us (authentication, policy at the session, MAIL FROM refused):
    #: pause all sending, tell the operator, mark no subscriber; the delivery waits.
    SENDER_BLOCKED = "sender_blocked"
    #: The relay cannot take mail now (refused connection, no greeting, 421, garbage, TLS):
    #: the circuit breaker decides when to try again; the delivery waits, uncharged.
    RELAY_UNAVAILABLE = "relay_unavailable"


@dataclass(frozen=True)
class RetryPolicy:
    #: Mature MTAs wait minutes before the first retry (Postfix: 5 minutes at least).
    first_delay_s: float = 300
    factor: float = 2.0
    #: Postfix stops growing its backoff at 4000 s (maximal_backoff_time); hours suit a course.
    max_delay_s: float = 4 * 3600
    #: Postfix bounces after 5 days, Exim after about 4.
    give_up_after_s: float = 4 * 86400
    #: Each delay is spread by up to this fraction either way.
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.first_delay_s <= self.max_delay_s and self.factor >= 1):
            raise ValueError("need 0 < first_delay_s <= max_delay_s and factor >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be at least 0 and below 1")

    def backoff_s(self, attempts: int) -> float:
        """The delay after the `attempts`-th failure, before jitter."""
        try:
            grown = self.first_delay_s * self.factor ** (attempts - 1)
        except OverflowError:  # attempts in the thousands: far past any cap
            return self.max_delay_s
        return min(grown, self.max_delay_s)

    def spread(self, delay_s: float, rng: random.Random) -> float:
        """`delay_s` spread by +-jitter, so that what failed together does not retry together."""
        return delay_s * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_at: datetime | None  #: for RETRY
    reason: str  #: one line, for logs and the deliveries.last_error column
    #: A recipient's server refused this message for policy reasons (5.7.x).
    policy: bool = False
    #: The relay refused the message for its size, at MAIL FROM or after DATA.
    too_big: bool = False


#: RFC 4954 §6: authentication required, mechanism too weak, credentials invalid,
#: encryption required.
_AUTH_CODES = frozenset({530, 534, 535, 538})
_SESSION_STAGES = frozenset({Stage.CONNECT, Stage.HELO, Stage.TLS, Stage.AUTH, Stage.MAIL})
#: RFC 5321 §3.8: "service not available, closing transmission channel", at any stage.
_CLOSING = 421
#: RFC 1870 §6.1: 552 at MAIL FROM, the message size exceeds the fixed maximum; RFC 3463
#: names it 5.3.4 (too big for the system) or 5.2.3 (over the administrative limit).
_TOO_BIG_CODE = 552
_TOO_BIG_STATUSES = frozenset({"5.3.4", "5.2.3"})
#: RFC 3463: the sender's mailbox address (x.1.7) or system address (x.1.8) is bad: ours.
_SENDER_ADDRESS = frozenset({"1.7", "1.8"})


def decide(
    report: SendReport,
    *,
    attempts: int,
    first_attempt_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """`attempts` counts the attempts made so far, this one included."""
    if attempts < 1:
        raise ValueError(f"attempts counts this attempt too, so it is at least 1: {attempts}")
    verdict = _verdict(report)
    reason = str(report)
    if verdict is Verdict.RETRY:
        delay_s = policy.spread(policy.backoff_s(attempts), rng)
        retry_at = now + timedelta(seconds=delay_s)
        if retry_at > first_attempt_at + timedelta(seconds=policy.give_up_after_s):
            gave_up = f"gave up after {plural(attempts, 'attempt')}: {reason}"
            return Decision(Verdict.FAILED, None, gave_up)
        return Decision(verdict, retry_at, reason)
    return Decision(
        verdict,
        None,
        reason,
        policy=verdict is Verdict.FAILED and _subject(report).startswith("7."),
        too_big=verdict is Verdict.FAILED and _is_size_refusal(report),
    )


def _verdict(report: SendReport) -> Verdict:
    if report.accepted:
        return Verdict.SENT
    code, permanent = report.code, report.code is not None and report.code >= 500
    if code == _CLOSING:
        return Verdict.RELAY_UNAVAILABLE
    if code in _AUTH_CODES or (permanent and _subject(report) in _SENDER_ADDRESS):
        return Verdict.SENDER_BLOCKED
    if report.stage in _SESSION_STAGES:
        return _session_verdict(report)
    return _recipient_verdict(report)


def _session_verdict(report: SendReport) -> Verdict:
    if report.code is None:
        # A relay that offers no AUTH answers nothing to it, and will not by itself.
        no_auth = report.stage is Stage.AUTH and not report.dropped
        return Verdict.SENDER_BLOCKED if no_auth else Verdict.RELAY_UNAVAILABLE
    if report.code < 500:
        return Verdict.RELAY_UNAVAILABLE
    if report.stage is Stage.MAIL and _is_size_refusal(report):
        return Verdict.FAILED
    return Verdict.SENDER_BLOCKED


def _recipient_verdict(report: SendReport) -> Verdict:
    subject = _subject(report)
    bare_552 = report.code == _TOO_BIG_CODE and report.enhanced is None
    if report.code is None or report.code < 500 or subject == "2.2" or bare_552:
        return Verdict.RETRY
    if subject.startswith("7."):
        return Verdict.FAILED
    if report.stage is Stage.RCPT or subject.startswith("1."):
        return Verdict.BOUNCED
    return Verdict.FAILED


def _subject(report: SendReport) -> str:
    """The enhanced status without its class: "5.7.26" -> "7.26"; "" when there is none."""
    return report.enhanced[2:] if report.enhanced else ""


def _is_size_refusal(report: SendReport) -> bool:
    if report.enhanced is not None:
        return report.enhanced in _TOO_BIG_STATUSES
    return report.code == _TOO_BIG_CODE


class PolicyWatch:
    """The last `window` attempts that reached a recipient, and whether more than `share` of
    them were refused for policy reasons (5.7.x). One such refusal is about one recipient;
    many, across domains, mean mailbox providers do not trust our mail (SPF, DKIM, DMARC,
    reputation), and sending on would only fail more messages for good."""

    def __init__(self, window: int, share: float) -> None:
        if window < 1 or not 0 < share <= 1:
            raise ValueError("need window >= 1 and 0 < share <= 1")
        self._recent: deque[tuple[str, str] | None] = deque(maxlen=window)
        self._refused = 0
        self.window = window
        #: More refusals than this among the last `window` attempts is too many. Judged
        #: against the whole window, so a few refusals among the first messages of a
        #: small list do not stop it.
        self.limit = share * window

    def observe(self, *, refused_for_policy: bool, recipient: str, reason: str) -> bool:
        """Count one attempt; True when policy refusals are now too many."""
        if len(self._recent) == self.window and self._recent[0] is not None:
            self._refused -= 1
        entry = (recipient.rpartition("@")[2], reason) if refused_for_policy else None
        self._recent.append(entry)
        self._refused += refused_for_policy
        return self._refused > self.limit

    def summary(self) -> str:
        """The refusals in the window, by domain and by reply, for the operator."""
        refusals = [entry for entry in self._recent if entry is not None]
        domains = Counter(domain for domain, _ in refusals)
        replies = Counter(reason for _, reason in refusals)
        by_domain = ", ".join(f"{domain} {n}" for domain, n in domains.most_common(5))
        by_reply = "; ".join(f"{reply} ({n}x)" for reply, n in replies.most_common(3))
        return (
            f"{len(refusals)} of the last {len(self._recent)} recipients were refused for "
            f"policy reasons ({by_domain}); replies: {by_reply}"
        )

    def reset(self) -> None:
        self._recent.clear()
        self._refused = 0
