"""store.hsm: a group reads back as saved, its PIN sealed (never in clear, bound to its
group) and opened only into a TokenRef; names are unique and groups on one module agree on
its environment; a group in use is not removed; which HSM keys are ready to be destroyed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from certpilot.domain.errors import Conflict, KeyBackendError, NotFound
from certpilot.keys.sealing import Sealer
from certpilot.store import hsm
from certpilot.store.certificates import remove_certificate
from certpilot.store.session import Database
from certpilot.store.tables import CertificateRow, HsmGroupRow, KeyRow
from tests.integration.store.conftest import T0, Seed, overlapping

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ENV = {"SOFTHSM2_CONF": "/etc/softhsm/a.conf"}
DAY = dt.timedelta(days=1)


def _add(db: Database, sealer: Sealer, name: str, *, module: str = MODULE, pin: str = "1234-PIN-9876",
         env: dict[str, str] | None = None, now: dt.datetime = T0) -> None:
    with db.transaction() as session:
        hsm.add_group(session, sealer, name=name, module_path=module, token_label=f"tok-{name}", pin=pin, now=now,
                      module_env=ENV if env is None else env)


def test_a_group_reads_back_as_saved_pin_only_in_the_token_ref(db: Database, sealer: Sealer) -> None:
    _add(db, sealer, "g1", now=dt.datetime(2026, 3, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))))
    with db.read() as session:
        group = hsm.get_group(session, "g1")
        ref = hsm.token_ref(session, sealer, "g1")
        raw = session.scalar(select(HsmGroupRow))
        assert raw is not None and b"1234-PIN-9876" not in raw.pin_sealed
        assert hsm.group_id(session, "g1") == raw.id
    assert (group.name, group.module_path, group.token_label, group.module_env) == ("g1", MODULE, "tok-g1", ENV)
    assert group.created_at == group.updated_at == T0 and group.created_at.utcoffset() == dt.timedelta(0)
    assert "1234" not in repr(group)
    assert (ref.module_path, ref.token_label, ref.pin, ref.env) == (
        MODULE, "tok-g1", "1234-PIN-9876", (("SOFTHSM2_CONF", "/etc/softhsm/a.conf"),))


def test_a_pin_moved_to_another_group_does_not_open(db: Database, sealer: Sealer) -> None:
    _add(db, sealer, "g1")
    _add(db, sealer, "g2", pin="other")
    with db.transaction() as session:
        rows = {r.name: r for r in session.scalars(select(HsmGroupRow))}
        rows["g2"].pin_sealed = rows["g1"].pin_sealed
        session.flush()
        with pytest.raises(KeyBackendError, match="does not open"):
            hsm.token_ref(session, sealer, "g2")
        session.rollback()


def test_names_unique_and_one_environment_per_module(db: Database, sealer: Sealer) -> None:
    _add(db, sealer, "g1")
    with pytest.raises(Conflict, match="HSM group 'g1' exists already"):
        _add(db, sealer, "g1", module="/other/module.so")
    with pytest.raises(Conflict, match="'g1' uses .*SOFTHSM2_CONF=/etc/softhsm/a.conf.*same environment"):
        _add(db, sealer, "g2", env={"SOFTHSM2_CONF": "/etc/softhsm/b.conf"})
    _add(db, sealer, "g3", module="/m2.so", env={})
    with pytest.raises(Conflict, match=r"'g3' uses /m2.so with the environment \(none\)"):
        _add(db, sealer, "g4", module="/m2.so", env={"X": "1"})
    _add(db, sealer, "g2", env=dict(ENV))  # same module, same environment: fine
    _add(db, sealer, "g0", module="/other/module.so", env={})
    with db.read() as session:
        assert [g.name for g in hsm.list_groups(session)] == ["g0", "g1", "g2", "g3"]
        for call in (hsm.get_group, hsm.group_id, lambda s, n: hsm.token_ref(s, sealer, n), hsm.remove_group):
            with pytest.raises(NotFound, match="HSM group"):
                call(session, "nope")


def test_a_group_in_use_is_not_removed(db: Database, sealer: Sealer, seed: Seed) -> None:
    _add(db, sealer, "g1")
    _add(db, sealer, "g2")
    with db.transaction() as session:
        seed.certificate(session, "hsm-cert", hsm_group="g1")
        seed.certificate(session, "soft")
        gid = hsm.group_id(session, "g2")
        live = seed.key(session, "soft", backend="pkcs11", hsm_group_id=gid)  # a key left from an older spec
    with pytest.raises(Conflict, match=r"used by certificate\(s\) hsm-cert"):
        with db.transaction() as session:
            hsm.remove_group(session, "g1")
    with pytest.raises(Conflict, match="still holds keys"):
        with db.transaction() as session:
            hsm.remove_group(session, "g2")
    with db.transaction() as session:
        hsm.mark_key_destroyed(session, live, T0)
        hsm.mark_key_destroyed(session, "no-such-key", T0)  # nothing to do
    with db.transaction() as session:
        hsm.remove_group(session, "g2")
    with db.read() as session:
        assert [g.name for g in hsm.list_groups(session)] == ["g1"]
        key = session.get(KeyRow, live)
        assert key is not None and key.hsm_group_id is None and key.destroyed_at == T0


def test_keys_to_retire(db: Database, sealer: Sealer, seed: Seed) -> None:
    """Revision 1 (key k1) was succeeded by revision 2 on day 10, which is served; k_lost
    never got a revision (day 5) and was followed by revision 2; k_pending waits for the
    next revision; a software key is never an HSM key to retire."""
    _add(db, sealer, "g1")
    with db.transaction() as session:
        gid = hsm.group_id(session, "g1")
        seed.certificate(session, "c", hsm_group="g1")
        k1 = seed.key(session, "c", backend="pkcs11", hsm_group_id=gid, created_at=T0)
        seed.revision(session, "c", 1, key_id=k1, issued_at=T0)
        k_lost = seed.key(session, "c", backend="pkcs11", hsm_group_id=gid, created_at=T0 + 5 * DAY)
        k2 = seed.key(session, "c", backend="pkcs11", hsm_group_id=gid, created_at=T0 + 9 * DAY)
        seed.revision(session, "c", 2, key_id=k2, issued_at=T0 + 10 * DAY)
        k_pending = seed.key(session, "c", backend="pkcs11", hsm_group_id=gid, created_at=T0 + 11 * DAY)
        cert = session.scalar(select(CertificateRow).where(CertificateRow.name == "c"))
        assert cert is not None
        cert.status.pending_key_id = k_pending
        seed.certificate(session, "soft")
        soft_old = seed.key(session, "soft", created_at=T0)
        seed.revision(session, "soft", 1, key_id=soft_old, issued_at=T0)
        seed.revision(session, "soft", 2, issued_at=T0 + DAY)

    def retire(older_than: dt.datetime | None, name: str | None = None) -> set[str]:
        with db.read() as session:
            return {k.key_id for k in hsm.hsm_keys_to_retire(session, older_than=older_than, name=name)}

    assert retire(None) == {k1, k_lost}
    assert retire(T0 + 10 * DAY) == {k1, k_lost}
    assert retire(T0 + 10 * DAY - dt.timedelta(seconds=1)) == set(), "not superseded long enough"
    assert retire(None, name="c") == {k1, k_lost, k2, k_pending}, "a certificate being removed: all its keys"
    with db.read() as session:
        stored = {k.key_id: k for k in hsm.hsm_keys_to_retire(session, older_than=None)}
    assert stored[k1].hsm_group == "g1" and stored[k1].backend == "pkcs11" and stored[k1].pkcs11_label
    with db.transaction() as session:
        hsm.mark_key_destroyed(session, k1, T0 + 11 * DAY)
    assert retire(None) == {k_lost}
    assert retire(None, name="c") == {k_lost, k2, k_pending}
    with db.transaction() as session:
        remove_certificate(session, "c")
    assert retire(None) == set()


def test_two_transactions_adding_one_name_at_once_one_conflicts(db: Database, sealer: Sealer) -> None:
    def add(label: str) -> Callable[[Session], object]:
        return lambda session: hsm.add_group(session, sealer, name="g1", module_path=MODULE, token_label=label,
                                             pin="0000", now=T0, module_env=ENV)

    first, second = overlapping(db, add("first"), add("second"))
    assert not isinstance(first, Exception)
    assert isinstance(second, Conflict) and "HSM group 'g1' exists already" in str(second)
    with db.read() as session:
        assert [g.token_label for g in hsm.list_groups(session)] == ["first"]
