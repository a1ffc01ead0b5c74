#!/usr/bin/env python3
"""Puts two `critest -benchmark` result dirs side by side, p50 per operation.

    bench-compare.py UCRI_DIR CONTAINERD_DIR

Prints a markdown table: the operation, ucri's and containerd's p50 in
milliseconds and how many times faster ucri is (containerd / ucri), then the
sum of the eight pod and container lifecycle steps. Exits 0: the figures are
a benchmark, read by people, not a pass/fail gate.
"""
import json
import os
import sys

LIFECYCLE = ["CreatePod", "StatusPod", "StopPod", "RemovePod",
             "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer"]


def p50(values):
    ordered = sorted(values)
    return ordered[round(0.5 * (len(ordered) - 1))] if ordered else None


def medians(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            results = json.load(f)
        points = results.get("datapoints") or []
        for i, operation in enumerate(results.get("operationsNames") or []):
            samples = [p["operationsDurationsNs"][i] / 1e6 for p in points
                       if len(p.get("operationsDurationsNs") or []) > i]
            if samples:
                out[operation] = (p50(samples), len(samples))
    return out


def cell(value):
    return "" if value is None else f"{value:.2f}"


def main():
    ucri, containerd = medians(sys.argv[1]), medians(sys.argv[2])
    print("| operation (p50 ms) | ucri | rootless containerd | containerd / ucri |")
    print("|---|---|---|---|")
    for operation in sorted(set(ucri) | set(containerd)):
        mine = ucri.get(operation, (None, 0))[0]
        theirs = containerd.get(operation, (None, 0))[0]
        ratio = f"{theirs / mine:.2f}x" if mine and theirs else ""
        print(f"| {operation} | {cell(mine)} | {cell(theirs)} | {ratio} |")
    if all(op in ucri and op in containerd for op in LIFECYCLE):
        mine = sum(ucri[op][0] for op in LIFECYCLE)
        theirs = sum(containerd[op][0] for op in LIFECYCLE)
        print(f"| lifecycle sum (the 8 pod and container steps) | {mine:.2f} | {theirs:.2f} | "
              f"{theirs / mine:.2f}x |")


if __name__ == "__main__":
    main()
