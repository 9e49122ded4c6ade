"""renewal_time: table of settings, plus the property that it stays within the validity."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certpilot.domain.model import RenewalSettings
from certpilot.policy import renewal_time

UTC = dt.timezone.utc
NB = dt.datetime(2026, 1, 1, tzinfo=UTC)
NA_90 = NB + dt.timedelta(days=90)


@pytest.mark.parametrize(
    ("not_after", "settings", "expected"),
    [
        (NA_90, RenewalSettings(), NB + dt.timedelta(days=60)),
        (NB + dt.timedelta(days=3), RenewalSettings(), NB + dt.timedelta(days=2)),
        (NA_90, RenewalSettings(renew_before_days=30), NB + dt.timedelta(days=60)),
        (NA_90, RenewalSettings(renew_before_days=0), NA_90),
        (NA_90, RenewalSettings(renew_before_days=200), NB),
        (NA_90, RenewalSettings(renew_before_percent=25), NB + dt.timedelta(days=67, hours=12)),
        (NA_90, RenewalSettings(renew_before_percent=50), NB + dt.timedelta(days=45)),
        (NA_90, RenewalSettings(renew_before_percent=100), NB),
        (NA_90, RenewalSettings(renew_before_percent=0), NA_90),
        (NA_90, RenewalSettings(renew_before_percent=150), NB),
        (NA_90, RenewalSettings(renew_before_days=10, renew_before_percent=50), NB + dt.timedelta(days=80)),
        (NB, RenewalSettings(), NB),
        (NB - dt.timedelta(days=1), RenewalSettings(), NB - dt.timedelta(days=1)),
    ],
    ids=[
        "default-two-thirds-of-90-days",
        "default-two-thirds-of-3-days",
        "days-30-before-expiry",
        "days-0-is-expiry",
        "days-longer-than-lifetime-clamped-to-not-before",
        "percent-25-renews-at-75-percent",
        "percent-50-renews-halfway",
        "percent-100-renews-at-issue",
        "percent-0-renews-at-expiry",
        "percent-over-100-clamped",
        "days-win-over-percent",
        "zero-lifetime-is-not-after",
        "inverted-validity-is-not-after",
    ],
)
def test_renewal_time(not_after, settings, expected):
    assert renewal_time(NB, not_after, settings) == expected


def test_renewal_time_keeps_utc():
    assert renewal_time(NB, NA_90, RenewalSettings()).tzinfo == UTC


_instants = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
)
_settings = st.one_of(
    st.just(RenewalSettings()),
    st.builds(RenewalSettings, renew_before_days=st.integers(min_value=0, max_value=10_000)),
    st.builds(
        RenewalSettings,
        renew_before_percent=st.floats(min_value=0, max_value=100, allow_nan=False),
    ),
)


@given(
    not_before=_instants,
    lifetime=st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3650)),
    settings=_settings,
)
def test_renewal_time_is_within_validity(not_before, lifetime, settings):
    not_after = not_before + lifetime
    due = renewal_time(not_before, not_after, settings)
    assert not_before <= due <= not_after


@given(
    not_before=_instants,
    lifetime=st.timedeltas(min_value=dt.timedelta(days=1), max_value=dt.timedelta(days=3650)),
    smaller=st.integers(min_value=0, max_value=100),
    larger=st.integers(min_value=0, max_value=100),
)
def test_larger_percent_renews_no_later(not_before, lifetime, smaller, larger):
    smaller, larger = sorted((smaller, larger))
    not_after = not_before + lifetime
    early = renewal_time(not_before, not_after, RenewalSettings(renew_before_percent=larger))
    late = renewal_time(not_before, not_after, RenewalSettings(renew_before_percent=smaller))
    assert early <= late
