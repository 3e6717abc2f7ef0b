"""structlog set-up: JSON lines for machines, console for people.

Private keys never reach a log: events carry names, paths and fingerprints,
never PEM bodies (tests/test_secrets.py checks the daemon's whole output).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(fmt: str | None = None, level: str = "info") -> None:
    """`fmt` is "json" or "console"; None picks console on a TTY, JSON otherwise."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str = "ckeetcd") -> Any:
    return structlog.get_logger(name)
