# Sourced by scripts/run-local and scripts/test: make sure $VENV has the
# package installed (editable) with the extra named in $1.
#
#   VENV    the virtualenv to create/use (default: .venv at the top of the repo)
#   PYTHON  the interpreter that creates it (default: python3.11, else python3)
#
# pip runs again only when pyproject.toml is newer than the last install, so a
# second start does not wait for pip.

ensure_venv() {
    local extra=$1
    VENV=${VENV:-.venv}
    if [ ! -x "$VENV/bin/python" ]; then
        local py=${PYTHON:-}
        if [ -z "$py" ]; then
            if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
        fi
        if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "error: $py is missing or older than Python 3.10 (set PYTHON=...)" >&2
            return 1
        fi
        echo "==> creating $VENV with $($py --version 2>&1)" >&2
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.ckeetcd-installed-$extra"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing ckeetcd[$extra] into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet -e ".[$extra]" >&2
        touch "$stamp"
    fi
}
