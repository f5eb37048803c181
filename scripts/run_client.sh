#!/bin/sh
# Run the spchat desktop client from this checkout:
#   scripts/run_client.sh [--host H] [--port P] [--name N]   (a window)
#   scripts/run_client.sh --cli --name N                     (line mode)
# Python: $PYTHON, else ./.venv if there is one (see README.rst), else python3.
here=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
python=${PYTHON:-python3}
[ -z "$PYTHON" ] && [ -x "$here/.venv/bin/python" ] && python="$here/.venv/bin/python"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$python" -m spchat.client "$@"
