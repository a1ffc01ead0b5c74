#!/usr/bin/env python3
"""Puts two `critest -benchmark` result dirs side by side, p50 per operation.

    bench-compare.py UCRI_DIR CONTAINERD_DIR

Prints a markdown table: the operation, ucri's and containerd's p50 in
milliseconds and how many times faster ucri is (containerd / ucri), then the
sum of the eight pod and container lifecycle steps. Exits 0: the figures are
a benchmark, read by people, not a pass/fail gate.
"""
import importlib.util
import os
import sys

LIFECYCLE = ["CreatePod", "StatusPod", "StopPod", "RemovePod",
             "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer"]


def load_summary():
    """bench-summary.py, which reads critest's JSON (its name has a dash)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench-summary.py")
    spec = importlib.util.spec_from_file_location("bench_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUMMARY = load_summary()


def medians(directory):
    """operation -> (p50 ms, samples)."""
    return {operation: (SUMMARY.percentile(samples, 0.5), len(samples))
            for _, operation, samples in SUMMARY.operations(directory)}


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
