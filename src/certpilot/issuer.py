"""What an issuer script may import from certpilot: the `Pending` signal and the
`RenewalWindow` answer.

    from certpilot.issuer import Pending
    raise Pending(retry_after_s=300, cookie="order-1234")

tells the controller the CA accepted the request but has not issued yet.

    from certpilot.issuer import RenewalWindow

    def certificate_renewal_info(cert_pem, args_dict, context):
        return RenewalWindow(start=..., end=..., retry_after_s=21600)

is the optional hook for a CA that suggests when to renew (ACME Renewal Information,
RFC 9773): `cert_pem` is the served certificate (leaf first, then its chain); return
None when the CA offers no suggestion. A plain dict with the same keys works too
(`start`/`end` as aware datetimes or RFC 3339 text).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

DEFAULT_RENEWAL_INFO_RETRY_AFTER_S = 6 * 3600  # RFC 9773 §4.3: without Retry-After, ask again in 6 h


class Pending(Exception):
    def __init__(self, retry_after_s: int = 300, cookie: str = "") -> None:
        super().__init__(f"the CA has not issued yet; retry after {retry_after_s} s")
        self.retry_after_s = int(retry_after_s)
        self.cookie = str(cookie)


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested renewal window for one certificate (RFC 9773 `suggestedWindow`).

    `start` and `end`: timezone-aware datetimes, `start` <= `end`; the controller renews
    at a uniformly random time between them (at once when the window has passed), never
    after the certificate expires. `retry_after_s`: when to ask again (the server's
    Retry-After). `explanation_url`: the CA's page about the window, if it gave one.
    """

    start: _dt.datetime
    end: _dt.datetime
    retry_after_s: int = DEFAULT_RENEWAL_INFO_RETRY_AFTER_S
    explanation_url: str | None = None
