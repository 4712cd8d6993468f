#!/usr/bin/env bash
# Install retrofit-agent as a systemd service on Debian / Raspberry Pi OS (arm64), from this
# checkout. Idempotent: run it again to upgrade; an edited /etc config is never overwritten.
#
#   sudo deploy/install.sh              install or upgrade, enable and (re)start the service
#   sudo deploy/install.sh --no-start   install and enable, start at the next boot
#   sudo deploy/install.sh --uninstall  stop and remove the service and /opt/retrofit-agent;
#                                       keep the config (/etc) and the queue (/var/lib)
#   sudo deploy/install.sh --uninstall --purge   remove those and the user as well
set -euo pipefail

NAME=retrofit-agent
PREFIX=/opt/$NAME
CONFIG_DIR=/etc/$NAME
STATE_DIR=/var/lib/$NAME
UNIT=/etc/systemd/system/$NAME.service
SOURCE=$(cd "$(dirname "$0")/.." && pwd)

# Booted with systemd? Not in a chroot building an SD-card image: there the unit is enabled
# (symlinks) but nothing is started or reloaded.
if [ -d /run/systemd/system ]; then booted=yes; else booted=no; fi

say() { printf '%s: %s\n' "$NAME" "$*"; }
die() { say "error: $*" >&2; exit 1; }

start=yes uninstall=no purge=no
for arg in "$@"; do
  case $arg in
    --no-start) start=no ;;
    --uninstall) uninstall=yes ;;
    --purge) purge=yes ;;
    *) die "unknown option $arg (see the top of $0)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"

if [ $uninstall = yes ]; then
  if [ $booted = yes ]; then systemctl stop $NAME.service 2>/dev/null || true; fi
  systemctl disable $NAME.service 2>/dev/null || true
  rm -f "$UNIT"
  if [ $booted = yes ]; then systemctl daemon-reload; fi
  rm -rf "$PREFIX"
  if [ $purge = yes ]; then
    rm -rf "$CONFIG_DIR" "$STATE_DIR"
    if id $NAME >/dev/null 2>&1; then userdel $NAME; fi
    say "removed, with its configuration, queue and user"
  else
    say "removed; kept $CONFIG_DIR and $STATE_DIR (--purge removes them)"
  fi
  exit 0
fi
[ $purge = no ] || die "--purge only goes with --uninstall"

# The system's Python 3.11+ with venv (Debian 12 / Raspberry Pi OS bookworm; python3-venv
# carries ensurepip); the wheels carry the rest. Not a Python under /root or /home: the
# service user could not run it.
PYTHON=/usr/bin/python3
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "needs Python 3.11 or newer"

# An unprivileged system user that may use the camera (group video) and nothing else.
getent group video >/dev/null || groupadd --system video
if ! id $NAME >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
    --shell /usr/sbin/nologin --comment "retrofit-agent service" $NAME
  say "created system user $NAME"
fi
usermod --append --groups video $NAME

# The program: a virtual environment under /opt, the model bundles and the README beside it.
install -d -m 0755 "$PREFIX" "$PREFIX/models"
[ -x "$PREFIX/venv/bin/python" ] || "$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade pip
build=$(mktemp -d)  # pip builds in the source tree: use a copy (the checkout may be read-only)
trap 'rm -rf "$build"' EXIT
cp -r "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$SOURCE/retrofit_agent" "$build/"
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$build"
cp -a "$SOURCE/models/." "$PREFIX/models/"
install -m 0644 "$SOURCE/README.md" "$PREFIX/README.md"
install -m 0644 "$SOURCE/deploy/agent.example.toml" "$PREFIX/agent.example.toml"

# Configuration: the example on first install only; an operator's edits are kept.
install -d -m 0755 "$CONFIG_DIR"
if [ ! -e "$CONFIG_DIR/agent.toml" ]; then
  install -m 0644 "$SOURCE/deploy/agent.example.toml" "$CONFIG_DIR/agent.toml"
  say "wrote $CONFIG_DIR/agent.toml: check capture.source, then: systemctl restart $NAME"
fi
"$PREFIX/venv/bin/python" -c '
import sys
from pathlib import Path
from retrofit_agent.config import load_config
load_config(Path(sys.argv[1]))' "$CONFIG_DIR/agent.toml" || die "$CONFIG_DIR/agent.toml is invalid"

# State: systemd creates /var/lib/retrofit-agent (StateDirectory=); create it now as well so
# `retrofit-agent queue stats` works before the first start.
install -d -m 0750 -o $NAME -g $NAME "$STATE_DIR"

install -m 0644 "$SOURCE/systemd/$NAME.service" "$UNIT"
if [ $booted = yes ]; then systemctl daemon-reload; fi
systemctl enable $NAME.service
if [ $start = yes ] && [ $booted = yes ]; then
  systemctl restart $NAME.service
  say "installed and (re)started; follow it with: journalctl -u $NAME -f"
else
  say "installed and enabled; it starts at the next boot (or: systemctl start $NAME)"
fi
