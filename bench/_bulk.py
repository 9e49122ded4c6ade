"""Bulk-loading many certificates straight into the tables, with no crypto.

Used by `renewal.py` (1,000,000 rows to search for due work) and `api.py`
(100,000 issued certificates to list and show). The rows are written with the
database's bulk path, not through the services: on SQLite one transaction of
DB-API `executemany` on a plain `sqlite3` connection, on PostgreSQL `COPY ...
FROM STDIN` through psycopg. Values are written in the formats SQLAlchemy itself
stores (checked against rows written by the services: on SQLite
`YYYY-MM-DD HH:MM:SS.ffffff` UTC text, JSON as text, booleans 0/1), so
certpilot reads them back like its own.

Two kinds of rows:

* bare (no revision): `certificates` + `certificate_status` only. Such a
  certificate is in phase `failed` with one failure and `retry_at` =
  `next_action_at`: a first issuance that failed and waits for its retry. That
  is a state the policy knows (`decide` says NOTHING until the retry time, then
  ISSUE), so the rows are valid for the loop without a key or a revision.
* issued: also one `keys` row and one `revisions` row per certificate, copied
  from a certificate the services really issued (`Template`), with serial and
  key id made unique, and `certificate_status.current_revision_id` pointing at
  it. `private_key_sealed` is NULL (the sealing is bound to the key id, so a
  copied blob could not be opened); nothing the benchmarks call reads it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine, make_url

from certpilot.store.tables import CertificateRow, KeyRow, ProfileRow, RevisionRow

from _setup import Backend, BenchError, PROFILE

UTC = dt.timezone.utc
GOLDEN = 0.6180339887498949


@dataclass(frozen=True)
class Template:
    """A revision the services really issued, to copy."""

    leaf_pem: str
    chain_pem: str
    csr_pem: str
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    public_key_sha256: str
    issued_at: dt.datetime


def template_from(backend: Backend, name: str) -> Template:
    with backend.app.db.transaction() as session:
        row = session.scalar(
            select(RevisionRow).join(CertificateRow, CertificateRow.id == RevisionRow.certificate_id)
            .where(CertificateRow.name == name).order_by(RevisionRow.number.desc()).limit(1)
        )
        if row is None:
            raise BenchError(f"no revision of {name} to copy")
        return Template(row.leaf_pem, row.chain_pem, row.csr_pem, row.not_before, row.not_after,
                        row.fingerprint_sha256, row.public_key_sha256, row.issued_at)


def plain_engine(url: str) -> Engine:
    """An engine without certpilot's hooks: on SQLite no `BEGIN IMMEDIATE`, so polling
    and loading from here never takes the write lock the controllers want."""
    return create_engine(url)


# --- value formats -----------------------------------------------------------------


def _ts_sqlite(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _ts_pg(epoch: float) -> str:
    return _ts_sqlite(epoch) + "+00"


def spread_schedule(count: int, now: float, due: int, horizon_days: float = 365.0) -> Callable[[int], float]:
    """next_action_at (epoch seconds) of row i: `due` rows spread evenly over the id range
    lie in the hour before `now`; the others are spread over the next `horizon_days`,
    in an order unrelated to the id (golden-ratio sequence), so only an index finds the
    earliest."""
    step = max(1, count // due) if due else 0
    horizon = horizon_days * 86400.0

    def at(i: int) -> float:
        frac = (i * GOLDEN) % 1.0
        if step and i % step == 0 and i // step < due:
            return now - 60.0 - frac * 3540.0
        return now + 600.0 + frac * horizon

    return at


# --- loading ----------------------------------------------------------------------


def load(
    backend: Backend,
    prefix: str,
    count: int,
    *,
    next_action_at: Callable[[int], float],
    template: Template | None = None,
    batch: int = 20_000,
) -> dict[str, float]:
    """Insert `count` certificates named `{prefix}-{i:07d}` (i = 0..count-1); returns timings."""
    url = make_url(backend.url)
    engine = plain_engine(backend.url)
    try:
        with engine.connect() as conn:
            profile_id = conn.scalar(select(ProfileRow.id).where(ProfileRow.name == PROFILE))
            cert_base = (conn.scalar(select(func.max(CertificateRow.id))) or 0) + 1
            rev_base = (conn.scalar(select(func.max(RevisionRow.id))) or 0) + 1
            key_count = conn.scalar(select(func.count(KeyRow.id))) or 0
    finally:
        engine.dispose()
    if profile_id is None:
        raise BenchError("the bench profile is missing")
    pg = backend.name == "postgresql"
    ts = _ts_pg if pg else _ts_sqlite
    now = time.time()
    created = ts(now)
    tables = _rows(prefix, count, cert_base, rev_base, key_count, profile_id, created, ts, next_action_at, template, pg)
    started = time.perf_counter()
    if pg:
        _load_pg(url, tables, batch)
    else:
        _load_sqlite(url.database, tables, batch)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    analyse(backend)
    return {"load_s": loaded, "analyse_s": time.perf_counter() - started}


def _rows(prefix, count, cert_base, rev_base, key_base, profile_id, created, ts, next_action_at, template, pg):
    """(table, columns, row iterator factory) in FK order."""
    true, false = ("t", "f") if pg else (1, 0)

    def certificates() -> Iterator[tuple]:
        rest = ', "organization": null, "organizational_unit": null, "locality": null, "state": null, ' \
               '"country": null, "email_address": null}'
        for i in range(count):
            host = f"h{i}.{prefix}.bench.test"
            subject = f'{{"common_name": "{host}"{rest}'  # what json.dumps(Subject.as_dict()) gives
            yield (cert_base + i, f"{prefix}-{i:07d}", profile_id, subject, f'["DNS:{host}"]', "ec:p256", None,
                   created, created)

    tables: list[tuple[str, tuple[str, ...], Callable[[], Iterator[tuple]]]] = [
        ("certificates", ("id", "name", "profile_id", "subject", "subject_alt_names", "key_spec", "hsm_group",
                          "created_at", "updated_at"), certificates),
    ]
    if template is not None:
        t = template
        csr, leaf, chain = t.csr_pem, t.leaf_pem, t.chain_pem
        nb, na, issued = ts(t.not_before.timestamp()), ts(t.not_after.timestamp()), ts(t.issued_at.timestamp())

        def key_id(i: int) -> str:
            return f"b{key_base + i:031x}"

        def keys() -> Iterator[tuple]:
            for i in range(count):
                yield (key_id(i), cert_base + i, "software", "ec:p256", None, t.public_key_sha256, csr, issued)

        def revisions() -> Iterator[tuple]:
            for i in range(count):
                yield (rev_base + i, cert_base + i, 1, key_id(i), leaf, chain, csr, f"{0xB0 << 120 | i:032x}",
                       nb, na, t.fingerprint_sha256, t.public_key_sha256, issued)

        tables.append(("keys", ("id", "certificate_id", "backend", "key_spec", "private_key_sealed",
                                "public_key_sha256", "csr_pem", "created_at"), keys))
        tables.append(("revisions", ("id", "certificate_id", "number", "key_id", "leaf_pem", "chain_pem", "csr_pem",
                                     "serial", "not_before", "not_after", "fingerprint_sha256", "public_key_sha256",
                                     "issued_at"), revisions))

        def status() -> Iterator[tuple]:
            for i in range(count):
                yield (cert_base + i, "issued", rev_base + i, 0, None, issued, ts(next_action_at(i)), None, false,
                       "[]", false)
    else:
        def status() -> Iterator[tuple]:
            for i in range(count):
                at = ts(next_action_at(i))
                yield (cert_base + i, "failed", None, 1, "bulk-loaded by the benchmark: waiting for its retry", None,
                       at, at, false, "[]", false)

    tables.append(("certificate_status", ("certificate_id", "phase", "current_revision_id", "failures", "last_error",
                                          "last_attempt_at", "next_action_at", "retry_at", "renewal_requested",
                                          "warned_days", "expired_event_recorded"), status))
    return tables


def _chunks(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _load_sqlite(path: str, tables, batch: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MB for this connection: the next_action_at index is filled in random order
        conn.execute("BEGIN IMMEDIATE")
        for table, columns, rows in tables:
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            for chunk in _chunks(rows(), batch):
                conn.executemany(sql, chunk)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _load_pg(url, tables, batch: int) -> None:
    import psycopg

    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cur:
            # foreign-key triggers off for this session, as pg_restore --disable-triggers does: the
            # rows are consistent by construction, and 1,000,000 per-row checks would double the time
            cur.execute("SET session_replication_role = replica")
            for table, columns, rows in tables:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows():
                        copy.write_row(row)
            for table in ("certificates", "revisions"):
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT coalesce(max(id), 1) FROM {table}))")
        conn.commit()


def analyse(backend: Backend) -> None:
    """PostgreSQL: VACUUM ANALYZE, as autovacuum would do soon after a bulk load. SQLite:
    nothing (certpilot never runs ANALYZE there, so its planner works without statistics)."""
    if backend.name != "postgresql":
        return
    engine = create_engine(backend.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for table in ("certificates", "certificate_status", "keys", "revisions"):
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        engine.dispose()


def table_sizes(backend: Backend) -> dict[str, str]:
    engine = plain_engine(backend.url)
    try:
        with engine.connect() as conn:
            if backend.name == "postgresql":
                return {"database": conn.scalar(text("SELECT pg_size_pretty(pg_database_size(current_database()))"))}
            pages = conn.scalar(text("PRAGMA page_count"))
            size = conn.scalar(text("PRAGMA page_size"))
            return {"database": f"{pages * size / 1e6:.0f} MB"}
    finally:
        engine.dispose()
