"""What to do after a send attempt: one SendReport in, one Decision out. Pure: no I/O and no
clock; the caller passes `now` and a Random.

The first rule that matches decides:

1. Accepted: SENT.
2. A 5xx whose enhanced status is X.2.2 (mailbox full) is soft, as mature MTAs treat it: the
   mailbox may empty, so it goes on to rule 7.
3. A 5xx that blames the sender: SENDER_BLOCKED, to try again after `first_delay_s` while
   the admin fixes the relay or the account; no subscriber is marked. That is an enhanced
   status 5.7.x (security or policy), an AUTH reply code (530, 534, 535, 538; RFC 4954), or
   any 5xx before the recipient was named: at CONNECT, HELO, TLS, AUTH or MAIL.
4. A 5xx at RCPT (550, 5.1.1 no such user, 5.1.x, 5.2.1 disabled), or a 5xx with an address
   status 5.1.x at DATA: BOUNCED; the address is bad.
5. Any other 5xx at DATA: FAILED; the relay refused this message, not the subscriber.
6. No reply during STARTTLS or AUTH (a certificate we reject, a relay offering no AUTH):
   SENDER_BLOCKED, as in rule 3: it is the relay's configuration, not the message.
7. Any other failure without a reply (refused, dropped, timed out) or 4xx: RETRY after an
   exponential backoff, `first_delay_s * factor ** (attempts - 1)` capped at `max_delay_s`,
   then spread by +-`jitter` so that a batch that failed together does not retry together.
   A retry that would fall after `first_attempt_at + give_up_after_s` is FAILED instead
   ("gave up").
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from newsletter.delivery.transport import SendReport, Stage


class Verdict(StrEnum):
    SENT = "sent"
    #: Transient: try again at `retry_at`.
    RETRY = "retry"
    #: Permanent, the recipient's address is bad: mark the subscriber bounced and suppress it.
    BOUNCED = "bounced"
    #: Permanent for this message but not the subscriber's fault (content refused, gave up).
    FAILED = "failed"
    #: The sender's problem (auth, policy, MAIL FROM refused): pause all sending, tell the
    #: admin, mark no subscriber; the delivery is tried again at `retry_at`.
    SENDER_BLOCKED = "sender_blocked"


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


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_at: datetime | None  #: for RETRY and SENDER_BLOCKED
    reason: str  #: one line, for logs and the deliveries.last_error column


#: RFC 4954 §6: authentication required, mechanism too weak, credentials invalid,
#: encryption required.
_AUTH_CODES = frozenset({530, 534, 535, 538})
_SENDER_STAGES = frozenset({Stage.CONNECT, Stage.HELO, Stage.TLS, Stage.AUTH, Stage.MAIL})
_SETUP_STAGES = frozenset({Stage.TLS, Stage.AUTH})


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
    match verdict:
        case Verdict.RETRY:
            return _retry_or_give_up(report, attempts, first_attempt_at, now, policy, rng)
        case Verdict.SENDER_BLOCKED:
            retry_at = now + timedelta(seconds=policy.first_delay_s)
            return Decision(verdict, retry_at, str(report))
        case _:
            return Decision(verdict, None, str(report))


def blames_sender(report: SendReport) -> bool:
    """Whether the relay refuses us as a sender: further tries now would all fail alike."""
    return _verdict(report) is Verdict.SENDER_BLOCKED


def _verdict(report: SendReport) -> Verdict:
    if report.accepted:
        return Verdict.SENT
    subject = report.enhanced[2:] if report.enhanced else ""  # "5.1.1" -> "1.1"
    if report.code is None and report.stage in _SETUP_STAGES:
        # TLS or login failing without a reply (a certificate we reject, no AUTH offered)
        # is a relay configuration problem: pause and tell the admin, retrying every
        # message alone would only hide it for four days.
        return Verdict.SENDER_BLOCKED
    permanent = report.code is not None and report.code >= 500
    if not permanent or subject == "2.2":
        return Verdict.RETRY
    if subject.startswith("7.") or report.code in _AUTH_CODES or report.stage in _SENDER_STAGES:
        return Verdict.SENDER_BLOCKED
    if report.stage is Stage.RCPT or subject.startswith("1."):
        return Verdict.BOUNCED
    return Verdict.FAILED


def _retry_or_give_up(
    report: SendReport,
    attempts: int,
    first_attempt_at: datetime,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    delay_s = policy.backoff_s(attempts) * rng.uniform(1 - policy.jitter, 1 + policy.jitter)
    retry_at = now + timedelta(seconds=delay_s)
    if retry_at > first_attempt_at + timedelta(seconds=policy.give_up_after_s):
        return Decision(Verdict.FAILED, None, f"gave up after {attempts} attempts: {report}")
    return Decision(Verdict.RETRY, retry_at, str(report))
