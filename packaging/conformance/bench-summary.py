#!/usr/bin/env python3
"""Summarises `critest -benchmark` results as a markdown table.

    bench-summary.py DIR

DIR is critest's -benchmarking-output-dir: JSON files of
{"operationsNames": [...], "numParallel": N, "datapoints": [{"operationsDurationsNs": [...]}]}.
One row per operation: samples, p50, p99 and mean in milliseconds.
"""
import json
import os
import sys


def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def operations(directory):
    """(benchmark, operation, samples in ms) for each operation critest timed."""
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
                yield name[:-5], operation, samples


def main():
    directory = sys.argv[1]
    print("| benchmark | operation | samples | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|---|")
    for benchmark, operation, samples in operations(directory):
        mean = sum(samples) / len(samples)
        print(f"| {benchmark} | {operation} | {len(samples)} | "
              f"{percentile(samples, 0.5):.2f} | {percentile(samples, 0.99):.2f} | {mean:.2f} |")


if __name__ == "__main__":
    main()
