#!/bin/sh
# Run the spchat server from this checkout in the foreground:
#   scripts/run_server.sh [twistd spchat options, e.g. --tcp-port 6000]
# Settings also come from CHAT_* variables and ./.env (see .env.example).
# Python: $PYTHON, else ./.venv if there is one (see README.rst), else python3.
here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
python=${PYTHON:-python3}
[ -z "$PYTHON" ] && [ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -c \
    "from twisted.scripts.twistd import run; run()" -n --pidfile= spchat "$@"
