"""structlog set-up: JSON lines for machines, console for people.

Configured lazily: commands that never log (certificate issuing) never pay
for importing structlog. Private keys never reach a log: events carry names,
paths and fingerprints, never PEM bodies (tests/test_secrets.py checks).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Any, TextIO

_settings: dict[str, str | None] = {"fmt": None, "level": "info"}
_configured = False
_stream: TextIO | None = None  # where events go; None = sys.stderr as it is now
# grpc's C core (abseil) prefixes its lines `E1201 10:03:50.958550  9025 file.cc:12] text`
_NATIVE = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+)\] ?(.*)")
NATIVE_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
# grpc's own chatter: only its errors, unless the operator asks for more
GRPC_VERBOSITY_DEFAULT = "ERROR"


def configure(fmt: str | None = None, level: str = "info") -> None:
    """`fmt` is "json" or "console"; None picks console on a TTY, JSON otherwise."""
    global _configured
    _settings.update(fmt=fmt, level=level)
    _configured = False


def effective_format() -> str:
    return _settings["fmt"] or ("console" if sys.stderr.isatty() else "json")


def _apply() -> None:
    global _configured
    import logging

    import structlog

    fmt = effective_format()
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
        logger_factory=structlog.PrintLoggerFactory(file=_stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get(name: str = "ckeetcd") -> Any:
    if not _configured:
        _apply()
    import structlog

    return structlog.get_logger(name)


def parse_native(line: str) -> dict[str, str]:
    """A native library's stderr line as event fields: level, source, line."""
    m = _NATIVE.fullmatch(line)
    if m is None:
        return {"level": "warning", "source": "stderr", "line": line}
    return {"level": NATIVE_LEVELS[m.group(1)], "source": m.group(2), "line": m.group(3)}


def capture_native_stderr() -> None:
    """Route what native code writes to file descriptor 2 into `native_log` events.

    grpc's C core writes plain-text lines straight to fd 2, bypassing Python;
    in a JSON log they are lines no parser reads. fd 2 becomes a pipe read by
    a thread that turns each line into an event; Python's own `sys.stderr`
    (events, error messages) keeps the real stream. Call it once, early, in a
    process's entry point only (it rewires the process's fd 2).
    """
    global _stream, _configured
    if _stream is not None:
        return
    os.environ.setdefault("GRPC_VERBOSITY", GRPC_VERBOSITY_DEFAULT)
    sys.stderr.flush()
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _stream = sys.stderr = real
    _configured = False  # events go to `real` from now on
    threading.Thread(target=_pump, args=(read_end,), name="native-stderr", daemon=True).start()


def _pump(fd: int) -> None:
    log = get("native")
    with os.fdopen(fd, "r", encoding="utf-8", errors="backslashreplace") as lines:
        for raw in lines:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            fields = parse_native(line)
            getattr(log, fields.pop("level"))("native_log", **fields)
