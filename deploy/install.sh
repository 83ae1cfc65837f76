#!/bin/sh
# Install Switchboard into a virtualenv of its own, with the dependency versions its test suite
# ran on (constraints.txt). Used by the wheel test (tests/install) and the Dockerfile.
#
#   deploy/install.sh VENV [TARGET]
#
#   VENV    the virtualenv to create or update, e.g. /opt/switchboard; it does not see the
#           system's site-packages
#   TARGET  what pip installs: a wheel (dist/switchboard-0.1.0-py3-none-any.whl), a checkout
#           ("/src/switchboard"), either with extras ("…whl[demo]"); default: the checkout
#           this script lies in
#
# Environment: PYTHON, the interpreter that makes the virtualenv (default python3, 3.11 or
# newer); CONSTRAINTS, the pins (default: constraints.txt at the top of this checkout).
# Afterwards VENV/bin/switchboard is the command.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 VENV [TARGET]" >&2
    exit 2
fi
venv=$1
target=${2:-$here/..}
python=${PYTHON:-python3}
constraints=${CONSTRAINTS:-$here/../constraints.txt}

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install.sh: Switchboard needs Python 3.11 or newer; $python is not" >&2
    exit 1
fi
if [ ! -f "$constraints" ]; then
    echo "install.sh: no constraints file at $constraints (set CONSTRAINTS)" >&2
    exit 1
fi

"$python" -m venv "$venv"
# pip itself is pinned too, so the resolver is the one the tests used
"$venv/bin/python" -m pip install --quiet --upgrade -c "$constraints" pip
"$venv/bin/python" -m pip install --quiet -c "$constraints" "$target"
"$venv/bin/switchboard" --version
