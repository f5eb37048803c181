"""irctest's results per test file, and whether any test failed that is
not a known failure (scripts/irctest_known_failures.txt).

    python scripts/irctest_report.py RESULTS.xml KNOWN.txt [--ids-out FILE]

Exit status 1 if a test failed that is not known to fail (their ids are
written to --ids-out, so that they can be run once more); known failures
that now pass are listed so the file can shrink.
"""

import argparse
import collections
import sys
import xml.etree.ElementTree as ET


def results(path):
    """test id -> passed / failed / skipped."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)
        file = module[0].replace(".", "/") + ".py"
        test_id = f"{file}::{module[1] if len(module) > 1 else ''}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[test_id] = "failed"
        elif case.find("skipped") is not None:
            out[test_id] = "skipped"
        else:
            out[test_id] = "passed"
    return out


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("results")
    parser.add_argument("known")
    parser.add_argument("--ids-out")
    args = parser.parse_args(argv)
    try:
        found = results(args.results)
    except (OSError, ET.ParseError) as e:
        print(f"irctest: no results ({e}): irctest did not run", file=sys.stderr)
        return 1
    if not found:
        print("irctest: no test ran (see irctest's own output above)", file=sys.stderr)
        return 1
    with open(args.known, encoding="utf-8") as f:
        known = {line.split("#")[0].strip() for line in f} - {""}
    per_file = collections.defaultdict(collections.Counter)
    for test_id, outcome in found.items():
        per_file[test_id.split("::")[0].replace("irctest/server_tests/", "")][outcome] += 1
    total = collections.Counter()
    print(f"{'file':<32} {'passed':>7} {'failed':>7} {'skipped':>8}")
    for file in sorted(per_file):
        c = per_file[file]
        total.update(c)
        print(f"{file:<32} {c['passed']:>7} {c['failed']:>7} {c['skipped']:>8}")
    print(f"{'total':<32} {total['passed']:>7} {total['failed']:>7} {total['skipped']:>8}")
    unexpected = sorted(t for t, o in found.items() if o == "failed" and t not in known)
    now_pass = sorted(t for t in known if found.get(t) == "passed")
    for test_id in now_pass:
        print(f"irctest: known to fail, passes now: {test_id}")
    for test_id in unexpected:
        print(f"irctest: FAILED, not a known failure: {test_id}")
    if args.ids_out:
        with open(args.ids_out, "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in unexpected)
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
