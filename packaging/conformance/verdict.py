#!/usr/bin/env python3
"""Judges a critest JUnit report against the list of expected failures.

    verdict.py JUNIT.xml EXPECTED_FAILURES.txt

EXPECTED_FAILURES.txt: one spec name a line (as the report names it, without
the "[It] " prefix); '#' starts a comment that says why it fails. A failure
not on the list fails the stage (exit 1); a listed spec that passed is named
so the list can shrink. Prints one summary line: "critest: N passed, N
failed, N skipped" where failed counts only unexpected failures and the
expected ones are listed above it.
"""
import sys
import xml.etree.ElementTree as ET


def load_expected(path):
    expected = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            spec, _, why = line.partition("#")
            spec = spec.strip()
            if spec:
                expected[spec] = why.strip()
    return expected


def spec_name(case):
    name = case.get("name", "")
    for prefix in ("[It] ",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.strip()


def outcome(case):
    status = case.get("status")
    if status:
        return {"passed": "passed", "failed": "failed", "panicked": "failed",
                "interrupted": "failed", "timedout": "failed", "aborted": "failed",
                "skipped": "skipped", "pending": "skipped"}.get(status, "failed")
    if case.find("failure") is not None or case.find("error") is not None:
        return "failed"
    if case.find("skipped") is not None:
        return "skipped"
    return "passed"


def main():
    report, expected_path = sys.argv[1], sys.argv[2]
    expected = load_expected(expected_path)
    root = ET.parse(report).getroot()
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    unexpected, known, fixed = [], [], []
    for case in root.iter("testcase"):
        name = spec_name(case)
        if name.startswith("[") and not case.get("name", "").startswith("[It]"):
            # [BeforeSuite], [ReportAfterSuite] and the like: count failures only.
            if outcome(case) != "failed":
                continue
        result = outcome(case)
        if result == "failed" and name in expected:
            known.append(name)
        elif result == "failed":
            failure = case.find("failure")
            message = (failure.get("message", "") if failure is not None else "")[:300]
            unexpected.append((name, message))
            counts["failed"] += 1
        else:
            counts[result] += 1
            if result == "passed" and name in expected:
                fixed.append(name)
    for name in known:
        print(f"expected failure: {name}  ({expected[name]})")
    for name in fixed:
        print(f"now passes (remove it from the expected failures): {name}")
    for name, message in unexpected:
        print(f"FAILED: {name}\n    {message}")
    print(f"critest: {len(known)} expected failures (listed above) are counted as skipped")
    print(f"critest: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped'] + len(known)} skipped")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
