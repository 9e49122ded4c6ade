"""docs/alerting-rules.yml is a valid Prometheus rules file over the metric names
certpilot really exposes (a renamed metric breaks this test, not someone's pager)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from certpilot.services.app import App
from certpilot.services.metrics import render_metrics

RULES = Path(__file__).resolve().parents[3] / "docs" / "alerting-rules.yml"


def exposed_names(app: App) -> set[str]:
    text = render_metrics(app).decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_rule_is_well_formed_and_uses_exposed_metrics(app: App) -> None:
    document = yaml.safe_load(RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} >= {
        "CertpilotCertificateExpiringSoon", "CertpilotRenewalFailing", "CertpilotRenewalLoopNotRunning"}
    exposed = exposed_names(app)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        used = set(re.findall(r"certpilot_[a-z_]+", rule["expr"]))
        assert used, f"{rule['alert']} uses no certpilot metric"
        assert used <= exposed, f"{rule['alert']} uses {used - exposed}, which /metrics does not expose"
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_the_readme_points_to_the_rules() -> None:
    readme = (RULES.parents[1] / "README.md").read_text()
    assert "docs/alerting-rules.yml" in readme
