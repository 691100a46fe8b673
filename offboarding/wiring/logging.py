"""structlog, configured once: JSON when not on a terminal; stdlib records share the output.

Our modules log through structlog loggers named after the module. Each event is
handed to the standard library with a readable message ("event key=value ...")
and its fields as `extra`, so Prefect's run-log handler (PREFECT_LOGGING_EXTRA_LOGGERS)
shows the same lines in the run logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

OUR_LOGGERS = ("offboarding", "connectors", "approvals", "flows")
_SECRET_HINTS = ("password", "secret", "token", "signature", "authorization")
_configured = False


def _redact(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(hint in key.lower() for hint in _SECRET_HINTS):
            event[key] = "**********"
    return event


def _to_stdlib(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    message = str(event.pop("event", ""))
    event.pop("level", None)
    event.pop("timestamp", None)
    fields = " ".join(f"{k}={v}" for k, v in sorted(event.items()) if not k.startswith("_"))
    return {
        "msg": f"{message} {fields}".strip(),
        "extra": {"structured": {**event, "event": message}},
    }


def _structured_fields(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    record = event.get("_record")
    structured = getattr(record, "structured", None)
    if isinstance(structured, dict):
        event.update(structured)
    return event


def configure_logging(
    *, json: bool | None = None, level: int = logging.INFO, attach_handler: bool = True
) -> None:
    """Idempotent. `json=None` picks JSON unless stderr is a terminal.

    Inside a Prefect flow run, pass `attach_handler=False`: Prefect's own handlers
    (console and API) are on our loggers already via PREFECT_LOGGING_EXTRA_LOGGERS.
    """
    global _configured
    if _configured:
        return
    _configured = True
    use_json = (not sys.stderr.isatty()) if json is None else json
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _redact,
            _to_stdlib,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            _structured_fields,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if attach_handler:
        # One handler, on the root logger: our lines and other libraries' warnings are
        # written once, in one format. A console handler already there (Prefect installs
        # its own when imported) would write each of our lines a second time.
        root = logging.getLogger()
        for old in list(root.handlers):
            if _writes_to_console(old):
                root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)


def _writes_to_console(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return stream is not None and stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)


def bind_case(case_id: str, **more: Any) -> None:
    structlog.contextvars.bind_contextvars(case_id=case_id, **more)
