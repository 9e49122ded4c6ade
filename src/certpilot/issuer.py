"""What an issuer script may import from certpilot: the `Pending` signal.

    from certpilot.issuer import Pending
    raise Pending(retry_after_s=300, cookie="order-1234")

tells the controller the CA accepted the request but has not issued yet.
"""

from __future__ import annotations


class Pending(Exception):
    def __init__(self, retry_after_s: int = 300, cookie: str = "") -> None:
        super().__init__(f"the CA has not issued yet; retry after {retry_after_s} s")
        self.retry_after_s = int(retry_after_s)
        self.cookie = str(cookie)
