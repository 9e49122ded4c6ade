"""Which events notify, how often a failing certificate notifies, the retry curve, and the
one readable sentence."""

from __future__ import annotations

import datetime as dt

import pytest

from certpilot.policy.notification import is_given_up, is_notified, retry_delay, summary_text

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("kind", "details", "expected"),
    [
        ("CERT_RENEW_FAILED", {"failures": 1}, True),
        ("CERT_RENEW_FAILED", {"failures": 2}, True),
        ("CERT_RENEW_FAILED", {"failures": 3}, False),
        ("CERT_RENEW_FAILED", {"failures": 4}, True),
        ("CERT_RENEW_FAILED", {"failures": 6}, False),
        ("CERT_RENEW_FAILED", {"failures": 64}, True),
        ("CERT_ISSUE_FAILED", {"failures": 1}, True),
        ("CERT_ISSUE_FAILED", {"failures": 5}, False),
        ("CERT_DEPLOY_FAILED", {"failures": 8}, True),
        ("CERT_DEPLOY_FAILED", {"failures": 9}, False),
        ("CERT_RENEW_FAILED", {}, False),
        ("CERT_EXPIRING", {"days_left": 7}, True),
        ("CERT_EXPIRED", {}, True),
        ("CERT_DEFERRAL_OVERDUE", {}, True),
        ("CERT_ISSUED", {}, False),
        ("CERT_DEPLOYED", {}, False),
        ("NOTIFICATION_DROPPED", {}, False),
        ("PROFILE_CHANGED", {}, False),
    ],
    ids=lambda v: str(v),
)
def test_first_failure_then_each_doubling_and_every_expiry(kind: str, details: dict, expected: bool) -> None:
    assert is_notified(kind, details) is expected


def test_a_hundred_failures_in_a_row_notify_seven_times() -> None:
    assert [n for n in range(1, 101) if is_notified("CERT_RENEW_FAILED", {"failures": n})] == [1, 2, 4, 8, 16, 32, 64]


def test_retries_double_from_thirty_seconds_to_an_hour() -> None:
    assert [retry_delay(n).total_seconds() for n in (1, 2, 3, 7, 8, 50)] == [30, 60, 120, 1920, 3600, 3600]
    with pytest.raises(ValueError):
        retry_delay(0)


def test_undelivered_for_three_days_is_given_up() -> None:
    assert not is_given_up(T0, T0 + dt.timedelta(days=3, seconds=-1))
    assert is_given_up(T0, T0 + dt.timedelta(days=3))


@pytest.mark.parametrize(
    ("kind", "details", "says"),
    [
        ("CERT_RENEW_FAILED", {"failures": 4, "error": "CA unavailable: 503\nmore lines"},
         "certpilot could not renew certificate web1 (profile corp) (4 failures in a row); the current revision "
         "is still served: CA unavailable: 503."),
        ("CERT_ISSUE_FAILED", {"failures": 1, "error": "denied."},
         "certpilot could not issue certificate web1 (profile corp): denied."),
        ("CERT_EXPIRING", {"days_left": 7, "not_after": "2026-02-01T00:00:00+00:00"},
         "Certificate web1 (profile corp) expires in 7 day(s), on 2026-02-01T00:00:00+00:00."),
        ("CERT_EXPIRED", {"not_after": "2026-02-01T00:00:00+00:00"},
         "Certificate web1 (profile corp) has expired (not after 2026-02-01T00:00:00+00:00)."),
        ("CERT_DEPLOY_FAILED", {"failures": 1, "revision": 3, "error": "exit 1"},
         "certpilot could not deploy revision 3 of certificate web1: exit 1."),
    ],
    ids=["renew-failed", "issue-failed", "expiring", "expired", "deploy-failed"],
)
def test_the_text_is_one_readable_sentence(kind: str, details: dict, says: str) -> None:
    text = summary_text(kind, "web1", "corp", details)
    assert text == says
    assert "\n" not in text
