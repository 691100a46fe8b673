"""What every page behind a personal link shares: its headers, its errors, its language."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from approvals.ports import ApprovalPorts
from offboarding.notification.rendering import pick_language, render_page

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # the link itself is the credential: never send it on as a Referer
    "Referrer-Policy": "no-referrer",
    # no framing (clickjacking the buttons), no scripts, forms only to ourselves
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


class PageError(Exception):
    def __init__(
        self, reason_key: str, status: int, detail: str = "", language: str | None = None
    ) -> None:
        super().__init__(reason_key)
        self.reason_key = reason_key
        self.status = status
        self.detail = detail
        self.language = language  # the link holder's, once the link is known to be genuine


class Pages:
    """Renders the link pages in the reader's language (`?lang=` switches it)."""

    def __init__(self, services: ApprovalPorts) -> None:
        self.services = services

    def language(self, request: Request, stored: str | None) -> str:
        return pick_language(
            request.query_params.get("lang") or stored, self.services.settings.default_language
        )

    def page(
        self, request: Request, name: str, lang: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        other = "en" if lang == "nl" else "nl"
        context.setdefault("switch_url", str(request.url.include_query_params(lang=other)))
        html = render_page(self.services.templates, name, lang, context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def error(self, request: Request, error: PageError, lang: str) -> HTMLResponse:
        return self.page(
            request,
            "approval_error",
            lang,
            error.status,
            reason_key=error.reason_key,
            detail=error.detail,
        )
