"""A request the CA holds (deferred issuance): its sealed cookie, since when, next poll.

The key the request was made with is the certificate's pending key (see
`store.attempts`), stored before the CA saw the CSR; the cookie is stored, sealed
under the master key, in the transaction that records the CA's `Pending` answer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from certpilot.domain.model import Outcome, Phase
from certpilot.keys.sealing import Sealer
from certpilot.store.attempts import _finish, clear_deferral
from certpilot.store.certificates import _row
from certpilot.store.tables import AttemptRow


def cookie_identity(certificate_id: int) -> str:
    return f"certificate_status:{certificate_id}:deferred_cookie"


@dataclass(frozen=True)
class Deferral:
    cookie: str
    since: dt.datetime
    poll_at: dt.datetime | None
    polls: int


def load(session: Session, name: str, sealer: Sealer) -> Deferral | None:
    """The request the CA holds for `name`, cookie opened; None when there is none."""
    row = _row(session, name)
    st = row.status
    if st.deferred_since is None:
        return None
    cookie = sealer.open_text(st.deferred_cookie_sealed, cookie_identity(row.id)) if st.deferred_cookie_sealed else ""
    return Deferral(cookie, st.deferred_since, st.deferred_poll_at, st.deferred_polls)


def record(
    session: Session, name: str, sealer: Sealer, *, attempt_id: int, cookie: str | None, now: dt.datetime,
    poll_at: dt.datetime, output: str | None,
) -> Deferral:
    """The CA answered `Pending`: keep (or replace, when `cookie` is not None) the sealed
    cookie, set the next poll, count the answer, finish the attempt as deferred."""
    row = _row(session, name, for_update=True)
    st = row.status
    if cookie is not None:
        st.deferred_cookie_sealed = sealer.seal_text(cookie, cookie_identity(row.id))
    if st.deferred_since is None:
        st.deferred_since = now
        st.deferred_polls = 0
    else:
        st.deferred_polls += 1
    st.deferred_poll_at = poll_at
    st.phase = Phase.DEFERRED.value
    st.renewal_requested = False
    attempt = session.get(AttemptRow, attempt_id)
    assert attempt is not None
    _finish(attempt, Outcome.DEFERRED, now, None, output)
    session.flush()
    return Deferral(cookie or "", st.deferred_since, poll_at, st.deferred_polls)


def abandon(session: Session, name: str) -> bool:
    """Forget the request the CA holds for `name` (a manual renewal submits afresh).
    Returns whether there was one."""
    st = _row(session, name).status
    if st.deferred_since is None:
        return False
    clear_deferral(st)
    return True
