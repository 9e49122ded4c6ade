"""When the renewal loop looks at a certificate next: the policy's decision, saved.

The store only loads the snapshot and saves the time; the decision is the pure
policy's (`policy.decide`). Called by whoever changed what the policy reads, in
the same transaction: the reconciler after each step, issuance after recording
an attempt's outcome.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from certpilot.policy import Action, Decision, decide
from certpilot.store import schedule


def decide_now(session: Session, name: str, now: dt.datetime) -> Decision:
    return decide(schedule.snapshot(session, name), now)


def reschedule(session: Session, name: str, now: dt.datetime) -> Decision:
    """Save when `name` is looked at next: now when something is due, else when it falls due."""
    decision = decide_now(session, name, now)
    schedule.set_next_action(session, name, decision.at if decision.action is Action.NOTHING else now)
    return decision
