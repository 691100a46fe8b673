"""Hiding credentials wherever a request is shown: headers, URLs, httpx's own log lines."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_HINTS = ("token", "secret", "password", "passwd", "key", "signature", "auth", "code")


def _secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_HEADERS or any(hint in lowered for hint in _SECRET_HINTS)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers with every credential (Authorization, cookies, *token*, *key*) hidden."""
    return {name: REDACTED if _secret_name(name) else value for name, value in headers.items()}


def redact_url(url: str | httpx.URL) -> str:
    """The URL with credential-looking query values and user info hidden."""
    parsed = httpx.URL(str(url))
    if parsed.userinfo:
        parsed = parsed.copy_with(username=REDACTED, password=None)
    if parsed.query:
        params = [(k, REDACTED if _secret_name(k) else v) for k, v in parsed.params.multi_items()]
        parsed = parsed.copy_with(params=params)
    return str(parsed)


class _RedactHttpxLog(logging.Filter):
    """httpx logs every request's URL at INFO; hide credentials in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args
            )
        return True


def redact_httpx_log() -> None:
    """Put the filter on httpx's logger, once."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxLog) for f in logger.filters):
        logger.addFilter(_RedactHttpxLog())
