#!/usr/bin/env bash
# The public IRC conformance suite irctest against spchat's IRC gateway,
# with the selection the project is measured by; one fresh server per
# test (scripts/irctest_spchat.py).  Fails if a test fails that is not in
# scripts/irctest_known_failures.txt (a failure is run once more first:
# irctest's timing on a loaded machine is not ours).
#
#     bash scripts/run_irctest.sh [extra pytest arguments]
#
# Needs: pip install '.[irc-test]' (pytest-xdist, filelock), and irctest in ../shared/irctest or $IRCTEST_DIR.
set -euo pipefail
scripts="$(cd "$(dirname "$0")" && pwd)"
checkout="$(dirname "$scripts")"
irctest="${IRCTEST_DIR:-}"
if [ -z "$irctest" ]; then
  for candidate in "$checkout/../shared/irctest" /work/shared/irctest; do
    if [ -d "$candidate/irctest" ]; then irctest="$(cd "$candidate" && pwd)"; break; fi
  done
fi
if [ -z "$irctest" ]; then
  echo "run_irctest: irctest not found (set IRCTEST_DIR)" >&2
  exit 1
fi
out="$(mktemp -d)"
selection='not services and not implementation-specific and not deprecated and not strict'
cd "$irctest"
export PYTHONPATH="$scripts:$checkout${PYTHONPATH:+:$PYTHONPATH}"
# The server tests only (irctest's own self-tests would count too otherwise).
python -m pytest -p no:cacheprovider --controller irctest_spchat -m "$selection" \
  -n 2 -q --junitxml="$out/results.xml" irctest/server_tests "$@" > "$out/log" 2>&1 || true
tail -n 1 "$out/log"
if ! grep -q "passed" "$out/log"; then
  tail -n 30 "$out/log" >&2  # irctest itself failed: say why
fi
if python "$scripts/irctest_report.py" "$out/results.xml" "$scripts/irctest_known_failures.txt" \
    --ids-out "$out/again"; then
  exit 0
fi
echo "run_irctest: running the unexpected failures once more" >&2
mapfile -t again < "$out/again"
python -m pytest -p no:cacheprovider --controller irctest_spchat -q \
  --junitxml="$out/again.xml" "${again[@]}" || true
python "$scripts/irctest_report.py" "$out/again.xml" "$scripts/irctest_known_failures.txt"
