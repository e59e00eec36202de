"""Named points where a test can kill or fail the process, to prove what a crash at exactly
that moment costs. Inert unless the NEWSLETTER_FAILPOINTS environment variable names a point:

    NEWSLETTER_FAILPOINTS="dispatch.after_accept=kill@3"   # SIGKILL at the third hit
    NEWSLETTER_FAILPOINTS="log.emit=raise"                 # every hit raises

Actions: `kill` (SIGKILL, no cleanup at all), `term` (one SIGTERM, as `systemctl stop`
sends), `raise` (FailpointHit). Several points are separated by `;`. The points are listed in
POINTS; naming another is an error, so a typo cannot make a test pass by doing nothing.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

ENVIRONMENT_VARIABLE = "NEWSLETTER_FAILPOINTS"

POINTS = {
    "dispatch.after_claim": "claimed deliveries are committed as `sending`, none sent yet",
    "dispatch.after_accept": "the relay answered 250 for a message, its outcome not yet recorded",
    "dispatch.after_record": "a chunk of outcomes has just been committed",
    "log.emit": "inside the log handler of serve, worker and tick, for newsletter's own lines",
    "broadcast.after_batch": "a batch of a newsletter issue's audience was committed as queued",
}
_ACTIONS = ("kill", "term", "raise")


class FailpointHit(Exception):
    """Raised at a point armed with `raise`."""


@dataclass
class _Armed:
    action: str
    at_hit: int  #: act on this hit (1-based) and every later one
    hits: int = 0


def parse(spec: str) -> dict[str, _Armed]:
    """The armed points of a NEWSLETTER_FAILPOINTS value; ValueError names a bad item."""
    armed: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        if name not in POINTS or action not in _ACTIONS or not (nth or "1").isdigit():
            raise ValueError(
                f"{ENVIRONMENT_VARIABLE}: {item!r}: expected point=action[@n] with a point of "
                f"{', '.join(POINTS)} and an action of {', '.join(_ACTIONS)}"
            )
        armed[name] = _Armed(action, int(nth or 1))
    return armed


_armed = parse(os.environ.get(ENVIRONMENT_VARIABLE, ""))


def hit(point: str) -> None:
    """Mark that the process reached `point`; acts only if the point is armed."""
    armed = _armed.get(point)
    if armed is None:
        return
    armed.hits += 1
    if armed.hits < armed.at_hit:
        return
    if armed.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif armed.action == "term":
        del _armed[point]  # once: a second SIGTERM would mean "stop now", not "stop"
        os.kill(os.getpid(), signal.SIGTERM)
    else:
        raise FailpointHit(point)
