"""`/api/docs`: the API described on one plain page built from the OpenAPI document on
the server (no scripts, nothing from another site, the same Content-Security-Policy as
every page); `/api/openapi.json` is the machine-readable document."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

_METHODS = ("get", "post", "put", "patch", "delete")


def docs_page(document: dict[str, Any]) -> str:
    rows = []
    for path, item in sorted(document.get("paths", {}).items()):
        for method in _METHODS:
            if method in item:
                op = item[method]
                summary = op.get("summary") or ""
                description = (op.get("description") or "").strip().split("\n\n")[0]
                rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{escape(path)}</code></td>"
                            f"<td>{escape(summary)}</td><td>{escape(description)}</td></tr>")
    info = document.get("info", {})
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(info.get('title', 'API'))} API</title></head><body>"
        f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))} REST API</h1>"
        f"<p>{escape(info.get('description', ''))}</p>"
        "<p>The full OpenAPI document: <a href=\"/api/openapi.json\">/api/openapi.json</a> "
        "(every endpoint but the probes needs <code>Authorization: Bearer &lt;token&gt;</code>).</p>"
        "<table><thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Description</th></tr></thead><tbody>"
        + "".join(rows) + "</tbody></table></body></html>"
    )


def install_docs(api: FastAPI) -> None:
    @api.get("/api/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(api.openapi()))
