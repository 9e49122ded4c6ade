"""The CA's suggested renewal window of a certificate's served revision (RFC 9773),
saved on its status row. Saves and loads only: the window is chosen by
`policy.renewal_info`, the check run by `services.renewal_info`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from certpilot.store.certificates import _row


@dataclass(frozen=True)
class RenewalInfoRecord:
    """`renew_at`: the time drawn in the window (None: no window); `check_at`: when the CA
    is asked next (None: never)."""

    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    renew_at: dt.datetime | None = None
    checked_at: dt.datetime | None = None
    check_at: dt.datetime | None = None
    explanation_url: str | None = None
    error: str | None = None


def load(session: Session, name: str) -> RenewalInfoRecord:
    st = _row(session, name).status
    return RenewalInfoRecord(st.renewal_info_window_start, st.renewal_info_window_end, st.renewal_info_renew_at,
                             st.renewal_info_checked_at, st.renewal_info_check_at, st.renewal_info_explanation_url,
                             st.renewal_info_error)


def save(session: Session, name: str, record: RenewalInfoRecord) -> None:
    st = _row(session, name).status
    st.renewal_info_window_start, st.renewal_info_window_end = record.window_start, record.window_end
    st.renewal_info_renew_at, st.renewal_info_checked_at = record.renew_at, record.checked_at
    st.renewal_info_check_at, st.renewal_info_explanation_url = record.check_at, record.explanation_url
    st.renewal_info_error = record.error


def start_over(session: Session, name: str, *, check_at: dt.datetime | None) -> None:
    """A new revision is served: forget the old one's window; ask at `check_at` (None: never)."""
    st = _row(session, name).status
    if st.renewal_info_check_at is None and st.renewal_info_checked_at is None and check_at is None:
        return  # nothing to forget, nothing to ask: no write
    save(session, name, RenewalInfoRecord(check_at=check_at))
