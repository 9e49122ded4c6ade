"""Cursor pagination: a `Link: <…>; rel="next"` header, as GitHub's API does."""

from __future__ import annotations

from fastapi import Request, Response


def link_next(request: Request, response: Response, cursor: str) -> None:
    url = request.url.include_query_params(cursor=cursor)
    response.headers["Link"] = f'<{url}>; rel="next"'
    response.headers["X-Next-Cursor"] = cursor
