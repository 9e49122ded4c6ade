"""Logins beyond the bound are answered 429 on the event loop; other requests pass."""

from __future__ import annotations

import asyncio
from typing import Any

from certpilot.api.login_admission import LoginAdmission


def test_logins_beyond_the_bound_are_refused_and_others_pass() -> None:
    async def scenario() -> tuple[list[int], list[int], str]:
        release = asyncio.Event()
        entered = 0

        async def slow_app(scope: Any, receive: Any, send: Any) -> None:
            nonlocal entered
            entered += 1
            await release.wait()
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        admission = LoginAdmission(slow_app, max_in_flight=3)

        async def call(headers: list[tuple[bytes, bytes]], path: str = "/api/v1/tokens", method: str = "POST"
                       ) -> tuple[int, dict[bytes, bytes]]:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            scope = {"type": "http", "method": method, "path": path, "headers": headers}
            await admission(scope, receive, send)
            return sent[0]["status"], dict(sent[0]["headers"])

        basic = [(b"authorization", b"Basic dTpw")]
        held = [asyncio.create_task(call(basic)) for _ in range(2)] + [asyncio.create_task(call([], "/login"))]
        while entered < 3:
            await asyncio.sleep(0)
        refused = [await call(basic), await call([], "/login")]
        bearer_task = asyncio.create_task(call([(b"authorization", b"Bearer cpt_x")], "/api/v1/certificates", "GET"))
        while entered < 4:  # the token request went through to the app, bound or not
            await asyncio.sleep(0)
        release.set()
        done = [status for status, _ in await asyncio.gather(*held)]
        await bearer_task
        after, _ = await call(basic)  # slots are given back
        return [s for s, _ in refused], done + [after], refused[0][1].get(b"retry-after", b"").decode()

    refused, served, retry_after = asyncio.run(scenario())
    assert refused == [429, 429]
    assert served == [401, 401, 401, 401]
    assert retry_after.isdigit() and int(retry_after) >= 1
