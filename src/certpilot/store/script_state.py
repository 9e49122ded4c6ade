"""A profile's script state (`context.state`): one row per key, each value sealed.

The value's sealing identity is the profile's id and the key, so a value copied
to another key or profile does not open. Changes are applied key by key with an
upsert (see `issuers.state` for the merge rule this gives concurrent calls).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from certpilot.domain.errors import NotFound
from certpilot.domain.script_state import STATE_LIMIT_BYTES, StateChanges, entry_size
from certpilot.keys.sealing import Sealer
from certpilot.store.tables import ProfileRow, ProfileStateRow


def value_identity(profile_id: int, key: str) -> str:
    return f"profile_state:{profile_id}:{key}"


def _profile_id(session: Session, profile: str) -> int:
    profile_id = session.scalar(select(ProfileRow.id).where(ProfileRow.name == profile))
    if profile_id is None:
        raise NotFound("profile", profile)
    return profile_id


def load(session: Session, profile: str, sealer: Sealer) -> dict[str, str]:
    """The profile's state, values opened."""
    profile_id = _profile_id(session, profile)
    rows = session.execute(select(ProfileStateRow.key, ProfileStateRow.value_sealed)
                           .where(ProfileStateRow.profile_id == profile_id))
    return {key: sealer.open_text(sealed, value_identity(profile_id, key)) for key, sealed in rows}


def key_names(session: Session, profile: str) -> list[str]:
    """The state's keys, sorted (what an admin may see: never the values)."""
    profile_id = _profile_id(session, profile)
    return sorted(session.scalars(select(ProfileStateRow.key).where(ProfileStateRow.profile_id == profile_id)))


def apply(session: Session, profile: str, sealer: Sealer, changes: StateChanges, now: dt.datetime) -> str | None:
    """Save one call's changes in the caller's transaction: its deletions always, its
    writes unless the state would then pass `STATE_LIMIT_BYTES` (other calls may have
    written meanwhile). Returns why writes were not saved, or None."""
    query = select(ProfileRow.id).where(ProfileRow.name == profile)
    if changes.set:
        # writing calls of one profile take turns (PostgreSQL; SQLite writes one at a time), so
        # the bound holds for their sum; NO KEY: inserts that reference the profile go on
        query = query.with_for_update(key_share=True)
    profile_id = session.scalar(query)
    if profile_id is None:
        return "the profile is gone: its script state was not saved"
    if changes.deleted:
        session.execute(delete(ProfileStateRow).where(ProfileStateRow.profile_id == profile_id)
                        .where(ProfileStateRow.key.in_(sorted(changes.deleted)))
                        .execution_options(synchronize_session=False))
    if not changes.set:
        return None
    others = session.scalar(select(func.coalesce(func.sum(ProfileStateRow.size), 0))
                            .where(ProfileStateRow.profile_id == profile_id)
                            .where(ProfileStateRow.key.not_in(sorted(changes.set)))) or 0
    total = others + sum(entry_size(k, v) for k, v in changes.set.items())
    if total > STATE_LIMIT_BYTES:
        return (f"context.state was not saved: with the writes of other calls it would hold {total} bytes, "
                f"more than {STATE_LIMIT_BYTES}")
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for key in sorted(changes.set):  # one order for every writer: no deadlock between two calls
        value = changes.set[key]
        values = {"id": uuid.uuid4().hex, "profile_id": profile_id, "key": key,
                  "value_sealed": sealer.seal_text(value, value_identity(profile_id, key)),
                  "size": entry_size(key, value), "updated_at": now}
        statement = insert(ProfileStateRow).values(**values)
        session.execute(statement.on_conflict_do_update(
            index_elements=["profile_id", "key"],
            set_={"value_sealed": statement.excluded.value_sealed, "size": statement.excluded.size,
                  "updated_at": statement.excluded.updated_at}))
    return None
