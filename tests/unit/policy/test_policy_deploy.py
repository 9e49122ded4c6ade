"""decide, for deployment: the served revision deploys before a renewal, its own backoff
holds it back without touching the issuer's, and a failed deployment never re-issues."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from certpilot.domain.model import Phase, RenewalSettings
from certpilot.policy import Action, CertificateSnapshot, Decision, Reason, decide

UTC = dt.timezone.utc
NB = dt.datetime(2026, 1, 1, tzinfo=UTC)
NA = NB + dt.timedelta(days=90)  # default renewal at NB + 60 d


def day(n: float) -> dt.datetime:
    return NB + dt.timedelta(days=n)


ISSUED = CertificateSnapshot(phase=Phase.ISSUED, has_revision=True, not_before=NB, not_after=NA,
                             renewal=RenewalSettings())
PENDING = CertificateSnapshot(phase=Phase.PENDING, has_revision=False, not_before=None, not_after=None,
                              renewal=RenewalSettings())


def snap(base: CertificateSnapshot, **changes: object) -> CertificateSnapshot:
    return dataclasses.replace(base, **changes)


CASES = [
    ("undeployed-revision-deploys", snap(ISSUED, deploy_pending=True), day(1),
     Decision(Action.DEPLOY, Reason.DEPLOY_DUE)),
    ("deployed-revision-waits-for-renewal", ISSUED, day(1), Decision(Action.NOTHING, Reason.NOT_DUE, at=day(60))),
    ("failed-deployment-backs-off", snap(ISSUED, deploy_pending=True, deploy_retry_at=day(1.5)), day(1),
     Decision(Action.NOTHING, Reason.NOT_DUE, at=day(1.5))),
    ("failed-deployment-retries-when-due", snap(ISSUED, deploy_pending=True, deploy_retry_at=day(1.5)), day(1.5),
     Decision(Action.DEPLOY, Reason.DEPLOY_RETRY)),
    ("deploy-comes-before-a-due-renewal", snap(ISSUED, deploy_pending=True), day(61),
     Decision(Action.DEPLOY, Reason.DEPLOY_DUE)),
    ("deploy-backoff-never-holds-a-due-renewal", snap(ISSUED, deploy_pending=True, deploy_retry_at=day(70)),
     day(61), Decision(Action.RENEW, Reason.RENEWAL_DUE)),
    ("deploy-failures-never-re-issue", snap(ISSUED, deploy_pending=True, deploy_retry_at=day(2)), day(1),
     Decision(Action.NOTHING, Reason.NOT_DUE, at=day(2))),
    ("nothing-to-deploy-without-a-revision", snap(PENDING, deploy_pending=True), day(0),
     Decision(Action.ISSUE, Reason.NO_REVISION)),
    ("expiry-is-recorded-before-a-deployment",
     snap(ISSUED, deploy_pending=True), day(91), Decision(Action.MARK_EXPIRED, Reason.EXPIRED)),
    ("manual-renewal-comes-before-a-deployment", snap(ISSUED, deploy_pending=True, renewal_requested=True),
     day(1), Decision(Action.RENEW, Reason.RENEWAL_REQUESTED)),
]


@pytest.mark.parametrize(("snapshot", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_deploy(snapshot: CertificateSnapshot, now: dt.datetime, expected: Decision) -> None:
    assert decide(snapshot, now) == expected
