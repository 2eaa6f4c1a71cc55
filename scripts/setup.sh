# Sourced by scripts/run and scripts/test: idempotent set-up of everything fleetbeat needs.
# Creates .venv (Bookworm refuses system-wide pip, PEP 668) and installs the package into it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # apt_install PKG... : install the Debian packages that are missing
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_venv() {
    # $1: extras to install, e.g. "test" (empty for the runtime only)
    # $2, $3: the venv and the Python that makes it (default: $VENV and $PYTHON)
    local extras="${1:-}" venv="${2:-$VENV}" python="${3:-$PYTHON}"
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    if [ ! -x "$venv/bin/python" ]; then
        log "creating $venv"
        "$python" -m venv "$venv"
    fi
    local spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    local stamp="$venv/.fleetbeat-installed-$extras"
    local digest
    digest="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
        log "installing fleetbeat${extras:+[$extras]} into $venv"
        "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$venv/bin/python" -m pip install -q -e "$spec"
        echo "$digest" > "$stamp"
    fi
}
