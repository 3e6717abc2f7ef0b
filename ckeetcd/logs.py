"""structlog set-up: JSON lines for machines, console for people.

Configured lazily: commands that never log (certificate issuing) never pay
for importing structlog. Private keys never reach a log: events carry names,
paths and fingerprints, never PEM bodies (tests/test_secrets.py checks).
"""

from __future__ import annotations

import sys
from typing import Any

_settings: dict[str, str | None] = {"fmt": None, "level": "info"}
_configured = False


def configure(fmt: str | None = None, level: str = "info") -> None:
    """`fmt` is "json" or "console"; None picks console on a TTY, JSON otherwise."""
    global _configured
    _settings.update(fmt=fmt, level=level)
    _configured = False


def _apply() -> None:
    global _configured
    import logging

    import structlog

    fmt = _settings["fmt"] or ("console" if sys.stderr.isatty() else "json")
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[str(_settings["level"]).upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get(name: str = "ckeetcd") -> Any:
    if not _configured:
        _apply()
    import structlog

    return structlog.get_logger(name)
