"""A request the CA holds (deferred issuance): its sealed cookie, since when, next poll.

The key the request was made with is the certificate's pending key (see
`store.attempts`), stored before the CA saw the CSR; the cookie is stored, sealed
under the master key, in the transaction that records the CA's `Pending` answer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from certpilot.domain.model import Outcome, Phase
from certpilot.keys.sealing import Sealer
from certpilot.store.attempts import _STATUS, CLEARED_DEFERRAL, AttemptInputs, _finish
from certpilot.store.certificates import _id, flush_orm, lock_certificate, update_status

_STORED = select(_STATUS.c.deferred_cookie_sealed, _STATUS.c.deferred_since, _STATUS.c.deferred_poll_at,
                 _STATUS.c.deferred_polls).where(_STATUS.c.certificate_id == bindparam("cid_"))


def cookie_identity(certificate_id: int) -> str:
    return f"certificate_status:{certificate_id}:deferred_cookie"


@dataclass(frozen=True)
class Deferral:
    cookie: str
    since: dt.datetime
    poll_at: dt.datetime | None
    polls: int


def _opened(cert_id: int, sealed: bytes | None, since: dt.datetime | None, poll_at: dt.datetime | None,
            polls: int, sealer: Sealer) -> Deferral | None:
    if since is None:
        return None
    cookie = sealer.open_text(sealed, cookie_identity(cert_id)) if sealed else ""
    return Deferral(cookie, since, poll_at, polls)


def of_inputs(inputs: AttemptInputs, sealer: Sealer) -> Deferral | None:
    """The request the CA holds, from what an attempt loaded (cookie opened); None when none."""
    return _opened(inputs.cert_id, inputs.deferred_cookie_sealed, inputs.deferred_since, inputs.deferred_poll_at,
                   inputs.deferred_polls, sealer)


def load(session: Session, name: str, sealer: Sealer) -> Deferral | None:
    """The request the CA holds for `name`, cookie opened; None when there is none."""
    cert_id = _id(session, name)
    flush_orm(session)
    st = session.connection().execute(_STORED, {"cid_": cert_id}).one()
    return _opened(cert_id, st.deferred_cookie_sealed, st.deferred_since, st.deferred_poll_at,
                   st.deferred_polls or 0, sealer)


def record(
    session: Session, name: str, sealer: Sealer, *, attempt_id: int, cookie: str | None, now: dt.datetime,
    poll_at: dt.datetime, output: str | None, started_at: dt.datetime | None = None,
) -> Deferral:
    """The CA answered `Pending`: keep (or replace, when `cookie` is not None) the sealed
    cookie, set the next poll, count the answer, finish the attempt as deferred."""
    cert_id = lock_certificate(session, name)
    st = session.connection().execute(_STORED, {"cid_": cert_id}).one()
    values: dict[str, object] = {"deferred_poll_at": poll_at, "phase": Phase.DEFERRED.value,
                                 "renewal_requested": False}
    if cookie is not None:
        values["deferred_cookie_sealed"] = sealer.seal_text(cookie, cookie_identity(cert_id))
    if st.deferred_since is None:
        since, polls = now, 0
        values["deferred_since"] = now
    else:
        since, polls = st.deferred_since, (st.deferred_polls or 0) + 1
    values["deferred_polls"] = polls
    _finish(session, attempt_id, started_at, Outcome.DEFERRED, now, None, output)
    update_status(session, cert_id, values)
    return Deferral(cookie or "", since, poll_at, polls)


def abandon(session: Session, name: str) -> bool:
    """Forget the request the CA holds for `name` (a manual renewal submits afresh).
    Returns whether there was one."""
    cert_id = _id(session, name)
    flush_orm(session)
    if session.connection().execute(_STORED, {"cid_": cert_id}).one().deferred_since is None:
        return False
    update_status(session, cert_id, CLEARED_DEFERRAL)
    return True
