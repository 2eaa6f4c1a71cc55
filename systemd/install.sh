#!/usr/bin/env bash
# Usage: systemd/install.sh agent|collector [--root DIR] [--no-venv] [--uninstall]
#
# Install (or uninstall) fleetbeat as a systemd service, in one command, idempotently:
#   sudo systemd/install.sh agent              # or: collector
#   sudo systemd/install.sh agent --uninstall  # keeps /etc/fleetbeat and the collector's state
#
# What it does, each step skipped when already done (a second run changes nothing):
#   1. /opt/fleetbeat/venv: a virtual environment (Bookworm forbids system-wide pip)
#      with fleetbeat from this checkout; reinstalled only when the source changed.
#   2. /etc/fleetbeat/<agent|collector>.toml from examples/ if absent (never overwritten),
#      and empty /etc/fleetbeat/{mqtt,amqp,kafka}-password and, for the agent, key (0600:
#      empty means none) if absent, because the unit's LoadCredential= needs them to exist.
#   3. `fleetbeat check-config` on that file: an invalid config stops here, nothing restarts.
#   4. /etc/systemd/system/fleetbeat-<name>.service, enabled; started, or restarted when the
#      unit or the venv changed.
#
# Options:
#   --root DIR   install under DIR instead of / (image building, tests): no systemctl
#                calls except `systemctl --root=DIR enable`. The venv's scripts then carry
#                DIR in their #! line: build the venv inside the image for a real device.
#   --no-venv    do not create or update DIR/opt/fleetbeat/venv; it must already hold
#                bin/fleetbeat (a venv provisioned otherwise; the tests use a stand-in).
#   --uninstall  stop, disable and remove the unit (and the venv once no fleetbeat unit
#                is left); /etc/fleetbeat and /var/lib/fleetbeat are kept.
set -euo pipefail
umask 022  # the service user (DynamicUser) must read the venv and the config

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

say() { printf '[fleetbeat] %s\n' "$*"; }
die() { printf '[fleetbeat] error: %s\n' "$*" >&2; exit "${2:-1}"; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

NAME="" ROOT="" UNINSTALL=0 VENV_STEP=1
while [ $# -gt 0 ]; do
    case "$1" in
        agent|collector) NAME="$1" ;;
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT="$(realpath -m "$2")"; shift ;;
        --root=*) ROOT="$(realpath -m "${1#--root=}")" ;;
        --uninstall) UNINSTALL=1 ;;
        --no-venv) VENV_STEP=0 ;;
        -h|--help) usage 0 ;;
        *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 >&2 ;;
    esac
    shift
done
[ -n "$NAME" ] || { printf 'say what to install: agent or collector\n\n' >&2; usage 2 >&2; }
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0 $NAME), or use --root DIR"
fi

OPT="$ROOT/opt/fleetbeat"
VENV="$OPT/venv"
ETC="$ROOT/etc/fleetbeat"
UNITDIR="$ROOT/etc/systemd/system"
UNIT="fleetbeat-$NAME.service"
CONFIG="$ETC/$NAME.toml"
# systemctl talks to a running manager only for a real install on a systemd machine.
LIVE=0
if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then LIVE=1; fi
SYSTEMCTL=(systemctl)
[ -n "$ROOT" ] && SYSTEMCTL=(systemctl "--root=$ROOT")
if ! command -v systemctl >/dev/null; then
    [ -n "$ROOT" ] || die "systemctl not found: is this a systemd machine?"
    SYSTEMCTL=(offline_systemctl)  # building an image on a machine without systemd
fi

# offline_systemctl enable|disable|is-enabled [--quiet] UNIT: the [Install] symlink by hand.
offline_systemctl() {
    local link="$UNITDIR/multi-user.target.wants/${*: -1}"
    case "$1" in
        enable) mkdir -p "${link%/*}"; ln -sfn "/etc/systemd/system/${*: -1}" "$link" ;;
        disable) rm -f "$link"; rmdir "${link%/*}" 2>/dev/null || true ;;
        is-enabled) [ -L "$link" ] ;;
    esac
}

# install_file SRC DEST MODE: copy only when the content or mode differs; return 0 if it changed.
install_file() {
    if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then
        return 1
    fi
    install -D -m "$3" "$1" "$2"
}

source_digest() {
    # Everything that ends up in the venv: pyproject.toml and the package sources.
    (cd "$SRC" && find pyproject.toml README.md src -type f \
        ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum) |
        sha256sum | cut -c1-32
}

if [ "$UNINSTALL" -eq 1 ]; then
    if [ -f "$UNITDIR/$UNIT" ]; then
        if [ "$LIVE" -eq 1 ]; then
            systemctl disable --now --quiet "$UNIT" || true
        else
            "${SYSTEMCTL[@]}" disable --quiet "$UNIT" 2>/dev/null || true
        fi
        rm -f "$UNITDIR/$UNIT"
        [ "$LIVE" -eq 1 ] && systemctl daemon-reload
        say "$UNIT disabled and removed"
    else
        say "$UNIT is not installed"
    fi
    if ! ls "$UNITDIR"/fleetbeat-*.service >/dev/null 2>&1 && [ -d "$OPT" ]; then
        rm -rf "$OPT"
        say "removed $OPT (no fleetbeat unit left)"
    fi
    [ -d "$ETC" ] && say "kept $ETC (your configuration); remove it yourself if you want"
    if [ "$NAME" = collector ] && [ -d "$ROOT/var/lib/private/fleetbeat" ]; then
        say "kept the collector's state in /var/lib/private/fleetbeat"
    fi
    exit 0
fi

RESTART=0

# --- 1. the virtual environment ------------------------------------------------
if [ "$VENV_STEP" -eq 1 ]; then
    if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
        if [ -z "$ROOT" ] && command -v apt-get >/dev/null; then
            say "installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        else
            die "$PYTHON cannot create virtual environments: apt install python3-venv"
        fi
    fi
    digest="$(source_digest)"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        mkdir -p "$OPT"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ "$(cat "$VENV/.fleetbeat-source" 2>/dev/null)" != "$digest" ]; then
        say "installing fleetbeat from $SRC into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SRC"
        echo "$digest" > "$VENV/.fleetbeat-source"
        RESTART=1
    else
        say "$VENV is up to date"
    fi
fi
FLEETBEAT="$VENV/bin/fleetbeat"
[ -x "$FLEETBEAT" ] || die "$FLEETBEAT is missing (--no-venv needs a venv provisioned there)"
if install_file "$SRC/README.md" "$OPT/README.md" 644; then say "installed $OPT/README.md"; fi

# --- 2. configuration (never overwritten) -----------------------------------------
mkdir -p "$ETC"
chmod 755 "$ETC"
if [ -e "$CONFIG" ]; then
    say "kept $CONFIG"
elif [ -f "$SRC/examples/$NAME.toml" ]; then
    # The example names one device; an installed agent defaults to the hostname instead.
    sed -e 's/^device_id = /# device_id = /' -e 's/^tags = /# tags = /' \
        "$SRC/examples/$NAME.toml" > "$CONFIG.new"
    chmod 644 "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
    say "created $CONFIG from examples/$NAME.toml: edit it (collector address...), then" \
        "systemctl reload $UNIT"
else
    printf '# fleetbeat %s: embedded defaults (see fleetbeat --help).\n' "$NAME" > "$CONFIG"
    chmod 644 "$CONFIG"
    say "created $CONFIG (embedded defaults: examples/$NAME.toml is not in this checkout)"
fi
# The unit's LoadCredential= needs each file to exist; empty means none.
for secret in mqtt-password amqp-password kafka-password; do
    if [ ! -e "$ETC/$secret" ]; then
        install -m 600 /dev/null "$ETC/$secret"
        say "created an empty $ETC/$secret (0600): put the password there if you use one"
    fi
done
if [ "$NAME" = agent ] && [ ! -e "$ETC/key" ]; then
    install -m 600 /dev/null "$ETC/key"
    say "created an empty $ETC/key (0600): to sign, put a key there (fleetbeat keygen)"
fi

# --- 3. check the configuration before anything starts ----------------------------
if ! check_output="$("$FLEETBEAT" check-config "$CONFIG" 2>&1)"; then
    printf '%s\n' "$check_output" >&2
    die "$CONFIG is invalid: fix it and run this again (the service was not (re)started)" 78
fi
say "$CONFIG is valid"

# --- 4. the unit ------------------------------------------------------------------
if install_file "$SRC/systemd/$UNIT" "$UNITDIR/$UNIT" 644; then
    say "installed $UNITDIR/$UNIT"
    RESTART=1
else
    say "$UNITDIR/$UNIT is up to date"
fi
if [ "$LIVE" -eq 1 ]; then
    [ "$RESTART" -eq 1 ] && systemctl daemon-reload
    systemctl enable --quiet "$UNIT"
    if [ "$RESTART" -eq 1 ]; then
        systemctl restart "$UNIT"
        say "$UNIT enabled and (re)started: systemctl status $UNIT"
    else
        systemctl start "$UNIT"  # a no-op when it runs already
        say "$UNIT enabled and running"
    fi
else
    if "${SYSTEMCTL[@]}" is-enabled --quiet "$UNIT" 2>/dev/null; then
        say "$UNIT is enabled"
    else
        "${SYSTEMCTL[@]}" enable --quiet "$UNIT"
        say "$UNIT enabled${ROOT:+ in $ROOT}"
    fi
    say "systemd is not running here${ROOT:+ (--root)}: not started"
fi
