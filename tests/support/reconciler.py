"""What the renewal-loop tests share (tests/integration/reconciler, and services tests
that need the same clock): a fake clock, a local CA that can follow it, issuer scripts
that fail or stall, and database queries no service exposes. Worker processes and
`wait_for` are in tests/support/processes.py."""

from __future__ import annotations

import datetime as dt
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from tests.support.script_access import grants_for
from certpilot.domain.model import Event, EventKind, KeySpec, ProfileParam, make_subject
from certpilot.pki.local_ca import LocalCA
from certpilot.services.app import App
from certpilot.services.certificates import certificate_events, request_certificate
from certpilot.services.profiles import create_profile
from certpilot.services.scripts import add_script
from certpilot.services.setup import bundled_local_ca_source
from certpilot.store.tables import AttemptRow, CertificateRow, CertificateStatusRow, RevisionRow

ACTOR = "test:reconciler"


# --- time ----------------------------------------------------------------------------


class FakeClock:
    """A frozen UTC clock that moves only when told to. With `now_file`, the instant is
    also written there, so a CA script in another process can issue "now" too."""

    def __init__(self, start: dt.datetime, now_file: Path | None = None) -> None:
        self._now = start
        self._now_file = now_file
        self._publish()

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        return self.set(self._now + delta)

    def set(self, instant: dt.datetime) -> dt.datetime:
        assert instant.tzinfo is not None, "the clock speaks aware UTC datetimes"
        self._now = instant
        self._publish()
        return instant

    def _publish(self) -> None:
        if self._now_file is not None:
            self._now_file.write_text(self._now.isoformat())


def real_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def whole_seconds(instant: dt.datetime) -> dt.datetime:
    """X.509 validity has one-second resolution; a clock on whole seconds keeps the
    instants the tests derive from a certificate exact."""
    return instant.replace(microsecond=0)


# --- issuer scripts ------------------------------------------------------------------

_REAL_NOW_LINE = "now = datetime.datetime.now(datetime.timezone.utc)"


def fake_time_local_ca_source() -> str:
    """The bundled local-CA script, reading "now" from the file named by the profile
    parameter `fake_now_file` instead of the real clock, so the certificates it issues
    live in the same (fake) time as the controller that checks and schedules them."""
    source = bundled_local_ca_source()
    assert source.count(_REAL_NOW_LINE) == 1, "the bundled local-CA script no longer reads the clock in one line"
    return source.replace(
        _REAL_NOW_LINE,
        'now = datetime.datetime.fromisoformat(open(args_dict["fake_now_file"]).read().strip())',
    )


FAILING_CA_MESSAGE = "CA unavailable: 503 Service Unavailable"

FAILING_CA_SOURCE = textwrap.dedent(
    f'''
    def certificate_request(csr, common_name, args_dict):
        raise RuntimeError({FAILING_CA_MESSAGE!r})
    '''
).lstrip()


def stalling_local_ca_source(stall_s: float) -> str:
    """The bundled local-CA script that, the first time it is called (per marker file,
    profile parameter `stall_marker`), writes the marker and sleeps `stall_s` seconds
    before signing: a CA that is slow exactly once."""
    prelude = textwrap.dedent(
        f'''
        import os as _os
        import time as _time


        def _stall_once(args_dict):
            marker = args_dict["stall_marker"]
            if _os.path.exists(marker):
                return
            with open(marker, "w") as f:
                f.write(str(_os.getpid()))
            _time.sleep({stall_s!r})
        '''
    )
    source = bundled_local_ca_source()
    head = "def certificate_request(csr, common_name, args_dict):\n"
    assert source.count(head) == 1
    return source.replace(head, prelude + "\n\n" + head + "    _stall_once(args_dict)\n")


def local_ca_params(ca: LocalCA, **extra: str) -> list[ProfileParam]:
    params = [
        ProfileParam("ca_cert", ca.cert_path.read_text()),
        ProfileParam("ca_key", ca.key_path.read_text(), sensitive=True),
        ProfileParam("ca_key_password", ca.password, sensitive=True),
    ]
    params += [ProfileParam(name, value) for name, value in extra.items()]
    return params


def add_local_ca_profile(
    app: App,
    ca: LocalCA,
    *,
    profile: str,
    script: str,
    source: str,
    timeout_s: int = 30,
    renew_before_days: int | None = None,
    renew_before_percent: float | None = None,
    warning_days: Sequence[int] | None = None,
    **params: str,
) -> None:
    add_script(app, script, source, timeout_s=timeout_s, actor=ACTOR)
    create_profile(
        app, profile, script=script, params=local_ca_params(ca, **params),
        renew_before_days=renew_before_days, renew_before_percent=renew_before_percent,
        warning_days=warning_days, allow_write=grants_for(params.values()), actor=ACTOR,
    )


def request(app: App, name: str, *, profile: str, key: KeySpec | None = None) -> None:
    request_certificate(app, name, profile=profile, subject=make_subject(f"{name}.example.test"),
                        key=key, actor=ACTOR)


def events_of(app: App, name: str, kind: EventKind) -> list[Event]:
    """The certificate's events of one kind, oldest first."""
    return [e for e in reversed(certificate_events(app, name)) if e.kind == kind.value]


# --- database queries (what no service exposes: leases, attempts of every row) -------


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str | None
    expires_at: dt.datetime | None


def leases(app: App) -> list[Lease]:
    query = (
        select(CertificateRow.name, CertificateStatusRow.lease_owner, CertificateStatusRow.lease_expires_at)
        .join(CertificateStatusRow, CertificateStatusRow.certificate_id == CertificateRow.id)
        .order_by(CertificateRow.name)
    )
    with app.db.engine.connect() as conn:
        return [Lease(*row) for row in conn.execute(query)]


def held_leases(app: App) -> list[Lease]:
    return [lease for lease in leases(app) if lease.owner is not None]


@dataclass(frozen=True)
class AttemptFact:
    certificate: str
    id: int
    kind: str
    worker: str | None
    key_id: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None
    error: str | None
    revision: int | None


def all_attempts(app: App) -> list[AttemptFact]:
    query = (
        select(CertificateRow.name, AttemptRow.id, AttemptRow.kind, AttemptRow.worker, AttemptRow.key_id,
               AttemptRow.started_at, AttemptRow.finished_at, AttemptRow.outcome, AttemptRow.error,
               AttemptRow.revision_number)
        .join(CertificateRow, CertificateRow.id == AttemptRow.certificate_id)
        .order_by(AttemptRow.id)
    )
    with app.db.engine.connect() as conn:
        return [AttemptFact(*row) for row in conn.execute(query)]


def revision_counts(app: App) -> dict[str, int]:
    """Certificate name -> number of stored revisions (0 included)."""
    query = (
        select(CertificateRow.name, func.count(RevisionRow.id))
        .outerjoin(RevisionRow, RevisionRow.certificate_id == CertificateRow.id)
        .group_by(CertificateRow.name)
    )
    with app.db.engine.connect() as conn:
        return {name: count for name, count in conn.execute(query)}
