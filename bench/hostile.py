"""The hostile runs' cases: how many are tried, how many pass, per issue and item.

    python bench/hostile.py [-k EXPRESSION] [--junit FILE]

Runs tests/test_hostile*.py (each test, or each parametrized case, is one attack: a
crafted dataset name, a planted checkpoint payload, a kill at a given moment, a full
disk...) and prints one row per item of the issue that listed it (test_itemNN_...: the
first hostile run, issue 10; test_iII_itemNN_...: issue II), then "hostile cases: N
tried, M passed". A case
skipped for a reason this machine gives (no small tmpfs, no export venv) is counted
apart, with the reason. Nothing is asserted here: the tests do that.
"""

import argparse
import collections
import glob
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = sorted(
    os.path.relpath(path, REPO)
    for path in glob.glob(os.path.join(REPO, "tests", "test_hostile*.py"))
)
_ITEM = re.compile(r"^test_(?:i(\d+)_)?item(\d+)_")
FIRST_RUN_ISSUE = 10  # test_itemNN_ without an issue: the first hostile run's


def outcomes(junit_path):
    """[((issue, item), case name, 'passed' | 'failed' | 'skipped', skip reason)]."""
    cases = []
    for case in ET.parse(junit_path).getroot().iter("testcase"):
        name = case.get("name", "")
        found = _ITEM.match(name)
        if found:
            item = (int(found.group(1) or FIRST_RUN_ISSUE), int(found.group(2)))
        else:
            item = (0, 0)
        outcome, reason = "passed", ""
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
            reason = case.find("skipped").get("message", "")
        cases.append((item, name, outcome, reason))
    return cases


def summary(cases):
    """The table and the closing line, as text."""
    by_item = collections.OrderedDict()
    for item, _, outcome, _ in sorted(cases):
        row = by_item.setdefault(item, collections.Counter())
        row[outcome] += 1  # passed, failed or skipped
        if outcome != "skipped":
            row["tried"] += 1
    lines = ["issue  item  tried  passed  skipped"]
    for (issue, item), row in by_item.items():
        lines.append(
            "%5s  %4s  %5d  %6d  %7d"
            % (issue or "-", item or "-", row["tried"], row["passed"], row["skipped"])
        )
    tried = sum(row["tried"] for row in by_item.values())
    passed = sum(row["passed"] for row in by_item.values())
    skipped = [(name, reason) for _, name, outcome, reason in cases if outcome == "skipped"]
    failed = [name for _, name, outcome, _ in cases if outcome == "failed"]
    lines += ["", "hostile cases: %d tried, %d passed" % (tried, passed)]
    lines += ["failed: %s" % name for name in failed]
    lines += ["skipped: %s (%s)" % (name, reason) for name, reason in skipped]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="expression", help="only the cases pytest -k selects")
    parser.add_argument("--junit", help="keep pytest's JUnit XML report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        junit = args.junit or os.path.join(tmp, "hostile.xml")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS]
        command += ["--junitxml", junit] + (["-k", args.expression] if args.expression else [])
        subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL)
        if not os.path.isfile(junit):
            sys.exit("error: pytest wrote no report (is pytest installed?)")
        print(summary(outcomes(junit)))


if __name__ == "__main__":
    main()
