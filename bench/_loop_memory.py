"""Child process of `renewal.py`: a renewal loop's sweeps over one database, and its memory.

    python bench/_loop_memory.py '{"url": ..., "data_dir": ..., "sweeps": 30, "due": ["name", ...]}'

Builds the App and a `Reconciler` as `certpilot worker` does (workers=2), then
runs sweeps the way `run_forever` does, without its sleeping: `run_once()` and
the `earliest_next_action` transaction of `_sleep`. First `sweeps` sweeps with
nothing due, then `sweeps` sweeps with a small batch: before each, the
certificates named in `due` (issued for real, so deciding needs no script) are
made due; `run_once` leases them, decides (nothing to do yet), reschedules and
releases them. Prints JSON: VmRSS after start-up, after warm-up and after each
phase, VmHWM (peak), and the median time of each step.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _proc import status_kb  # noqa: E402


def main() -> None:
    cfg = json.loads(sys.argv[1])
    rss = {"after_imports": None}
    from sqlalchemy import select, update

    from certpilot.config import Settings
    from certpilot.reconciler.loop import Reconciler
    from certpilot.services.app import App
    from certpilot.store import schedule
    from certpilot.store.tables import CertificateRow, CertificateStatusRow

    rss["after_imports"] = status_kb("self", "VmRSS")
    app = App(Settings(data_dir=Path(cfg["data_dir"]), database_url=cfg["url"]))
    reconciler = Reconciler(app)
    rss["after_start"] = status_kb("self", "VmRSS")
    due = cfg["due"]

    ours = select(CertificateRow.id).where(CertificateRow.name.in_(due)).scalar_subquery()

    def make_due() -> None:
        with app.db.transaction() as session:
            session.execute(update(CertificateStatusRow).where(CertificateStatusRow.certificate_id.in_(ours))
                            .values(next_action_at=app.clock.now()))

    def sweep(with_batch: bool) -> dict[str, float]:
        if with_batch:
            make_due()
        c0, t0 = time.process_time(), time.perf_counter()
        handled = reconciler.run_once()
        c1, t1 = time.process_time(), time.perf_counter()
        with app.db.transaction() as session:
            schedule.earliest_next_action(session, app.clock.now())
        c2, t2 = time.process_time(), time.perf_counter()
        expected = len(due) if with_batch else 0
        if handled != expected:
            raise SystemExit(f"a sweep leased {handled} certificate(s), {expected} expected")
        return {"run_once_ms": 1000 * (t1 - t0), "earliest_ms": 1000 * (t2 - t1),
                "run_once_cpu_ms": 1000 * (c1 - c0), "earliest_cpu_ms": 1000 * (c2 - c1)}

    try:
        for _ in range(3):
            sweep(False)
            sweep(True)
        rss["after_warmup"] = status_kb("self", "VmRSS")
        phases = {}
        for name, with_batch in (("idle", False), ("batch", True)):
            samples = [sweep(with_batch) for _ in range(cfg["sweeps"])]
            phases[name] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
            rss[f"after_{name}"] = status_kb("self", "VmRSS")
        rss["peak"] = status_kb("self", "VmHWM")
    finally:
        reconciler._threads.shutdown(wait=True)
        app.close()
    json.dump({"rss_kb": rss, "phases": phases, "batch": len(due), "sweeps": cfg["sweeps"]}, sys.stdout)


if __name__ == "__main__":
    main()
