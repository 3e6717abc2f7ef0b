"""Untrusted text in error messages, and characters no name, path or flag may hold.

Config values and command-line arguments are echoed in errors. One helper
decides how: short (a 50 MB value is cut to about 60 characters, with its
length), and escaped (a newline or an escape sequence cannot forge or garble
the lines an operator reads). The same module says which characters are
refused everywhere: control and format characters, line separators, and
the surrogates Python uses for bytes that are not UTF-8 (from argv or the
environment). Pure: no I/O; the bottom of the layers.
"""

from __future__ import annotations

import unicodedata

ECHO_LIMIT = 60
# Cc: controls (NUL, newline, ESC, DEL, C1); Cf: format (bidi overrides, zero
# width); Cs: surrogates (undecodable bytes); Zl/Zp: line/paragraph separators.
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_BIG_INT_BITS = 200  # past this an int is described, not printed (str() of it may even fail)


def show(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` for an error message: repr (escaped), cut to about `limit` characters."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int) and value.bit_length() > _BIG_INT_BITS:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        head = repr(value[:limit])
        return f"{head[:-1]}...{head[-1]} ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def quote(text: str, limit: int = ECHO_LIMIT) -> str:
    """`text` between double quotes, Go style (`"24x"`): escaped and cut like show()."""
    cut = text if len(text) <= limit else text[:limit]
    out = []
    for c in cut:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    body = "".join(out)
    return f'"{body}"' if cut is text else f'"{body}..." ({len(text)} characters)'


def printable(text: str, limit: int = ECHO_LIMIT) -> str:
    """A message built elsewhere (argparse's) made safe to print: non-printable
    characters escaped, each run of more than `limit` non-blank characters cut."""
    out = []
    for c in text:
        out.append(c if c.isprintable() or c == " " else
                   c.encode("unicode_escape").decode("ascii"))
    words = "".join(out).split(" ")
    return " ".join(w if len(w) <= limit else f"{w[:limit]}...({len(w)} characters)"
                    for w in words)


def refused_char(text: str) -> str | None:
    """Why `text` cannot be a name, path, flag, URL or argument, or None when it can.

    A surrogate stands for a byte that is not UTF-8 (Python's surrogateescape);
    it is named as that byte.
    """
    # Every refused category is one str.isprintable() refuses too (C, Z but the space):
    # a printable text is settled at C speed (a 5 MB config value took 0.3 s per key).
    if text.isprintable():
        return None
    for i, c in enumerate(text):
        cat = unicodedata.category(c)
        if cat not in REFUSED_CATEGORIES:
            continue
        if cat == "Cs":
            code = ord(c)
            what = f"byte 0x{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
            return f"is not valid UTF-8 ({what} at index {i})"
        return f"must not contain control characters (U+{ord(c):04X} at index {i})"
    return None
