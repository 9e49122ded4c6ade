"""Prometheus metrics, named after cert-manager's `certmanager_certificate_*` with a `certpilot_` prefix.

Read from the database at each scrape, so every API server of a scaled-out
installation reports the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from certpilot.domain.model import Phase
from certpilot.policy import renewal_time
from certpilot.services.app import App
from certpilot.store.heartbeats import last_pass_at
from certpilot.store.inventory import attempts_by_outcome, inventory

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _InventoryCollector(Collector):
    def __init__(self, app: App) -> None:
        self._app = app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["name", "profile"]
        expiration = GaugeMetricFamily("certpilot_certificate_expiration_timestamp_seconds",
                                       "The date after which the served certificate expires.", labels=labels)
        renewal = GaugeMetricFamily("certpilot_certificate_renewal_timestamp_seconds",
                                    "The time at which the certificate is due for renewal.", labels=labels)
        ready = GaugeMetricFamily("certpilot_certificate_ready_status",
                                  "1 for the condition the certificate is in: True when a valid revision is served.",
                                  labels=[*labels, "condition"])
        failures = GaugeMetricFamily("certpilot_certificate_failures",
                                     "Consecutive failed issuance attempts.", labels=labels)
        now = self._app.clock.now()
        with self._app.db.read() as session:
            for line in inventory(session):
                key = [line.name, line.profile]
                is_ready = line.not_after is not None and line.not_after > now and line.phase is not Phase.EXPIRED
                if line.not_before is not None and line.not_after is not None:
                    expiration.add_metric(key, line.not_after.timestamp())
                    renewal.add_metric(key, renewal_time(line.not_before, line.not_after, line.renewal).timestamp())
                for condition in ("True", "False"):
                    ready.add_metric([*key, condition], 1.0 if (condition == "True") == is_ready else 0.0)
                failures.add_metric(key, float(line.failures))
            outcomes = attempts_by_outcome(session)
            last = last_pass_at(session)
        yield from (expiration, renewal, ready, failures)
        attempts = CounterMetricFamily("certpilot_issuer_attempts", "Issuer script calls by outcome.", labels=["outcome"])
        for outcome in ("issued", "failed", "invalid", "timeout", "deferred"):
            attempts.add_metric([outcome], float(outcomes.get(outcome, 0)))
        yield attempts
        loop = GaugeMetricFamily("certpilot_renewal_loop_last_run_timestamp_seconds",
                                 "When a renewal loop sharing this database last finished a pass (0: never).")
        loop.add_metric([], last.timestamp() if last else 0.0)
        yield loop


def render_metrics(app: App) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_InventoryCollector(app))
    return generate_latest(registry)
