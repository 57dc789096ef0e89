#!/usr/bin/env python3
"""Markdown tables from criterion's output of `cargo bench --bench nickname_queries`.

    python3 benches/report.py [target/criterion] > tables.md

Reads every `<group>/<function>/<rows>/new/benchmark.json` (for the id
`<operation>/<backend>/<implementation>/<rows>`) and the `estimates.json` beside it
(the median), and prints: the medians of every id, the ratios of the crate to each
baseline against their targets, the growth from the smallest to the largest
size, and the batch-insert throughput. Standard library only.
"""

import json
import os
import sys
from collections import defaultdict

OPERATIONS = [
    "lookup_by_nickname",
    "lookup_by_nickname_decrypt",
    "find_all_by_nickname",
    "find_by_type",
    "list_account",
    "insert_one",
    "insert_batch_1000",
]
IMPLEMENTATIONS = {
    "sqlite": ["crate", "diesel", "rusqlite"],
    "postgres": ["crate", "diesel", "postgres", "diesel_bare", "postgres_bare"],
}
# (operation, backend, baseline) -> the most crate / baseline may be
TARGETS = {
    ("lookup_by_nickname", "sqlite", "rusqlite"): 1.3,
    ("lookup_by_nickname", "sqlite", "diesel"): 1.1,
    ("lookup_by_nickname_decrypt", "sqlite", "rusqlite"): 1.6,
    ("lookup_by_nickname", "postgres", "diesel"): 1.1,
    ("lookup_by_nickname", "postgres", "postgres"): 1.0,
}
GROWTH_TARGET = 1.5  # lookup at 1M / lookup at 10k
INSERT_TARGET = 50_000  # SQLite batch insert, credentials per second


def load(root):
    medians = {}  # (op, backend, impl, rows) -> ns
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            estimates = json.load(f)
        parts = bench["full_id"].split("/")
        if len(parts) != 4:
            continue
        op, backend, impl, rows = parts
        medians[(op, backend, impl, int(rows))] = estimates["median"]["point_estimate"]
    return medians


def fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.0f} µs"
    return f"{ns / 1e3:.2f} µs"


def fmt_rows(rows):
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1000 == 0:
        return f"{rows // 1000}k"
    return str(rows)


def verdict(value, limit, at_most=True):
    ok = value <= limit if at_most else value >= limit
    return "ok" if ok else "**missed**"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
    medians = load(root)
    if not medians:
        sys.exit(f"no criterion results under {root}: run cargo bench --bench nickname_queries")
    sizes = sorted({k[3] for k in medians})
    backends = [b for b in IMPLEMENTATIONS if any(k[1] == b for k in medians)]
    out = []
    p = out.append

    p("### Medians\n")
    p("Median time per operation (criterion's `median.point_estimate`); one column per size.\n")
    for op in OPERATIONS:
        rows_present = [s for s in sizes if any(k[0] == op and k[3] == s for k in medians)]
        if not rows_present:
            continue
        p(f"`{op}`\n")
        p("| backend/implementation | " + " | ".join(fmt_rows(s) for s in rows_present) + " |")
        p("|---|" + "---:|" * len(rows_present))
        for backend in backends:
            for impl in IMPLEMENTATIONS[backend]:
                cells = [medians.get((op, backend, impl, s)) for s in rows_present]
                if all(c is None for c in cells):
                    continue
                p(f"| {backend}/{impl} | " + " | ".join("–" if c is None else fmt_time(c) for c in cells) + " |")
        p("")

    p("### Ratios: crate / baseline\n")
    p("Below 1 the crate was faster. Target: the one set for it, where there is one.\n")
    p("| operation | backend | baseline | " + " | ".join(fmt_rows(s) for s in sizes) + " | target |")
    p("|---|---|---|" + "---:|" * len(sizes) + "---|")
    for op in OPERATIONS:
        for backend in backends:
            for base in IMPLEMENTATIONS[backend][1:]:
                cells = []
                worst = None
                for s in sizes:
                    c = medians.get((op, backend, "crate", s))
                    b = medians.get((op, backend, base, s))
                    if c is None or b is None:
                        cells.append("–")
                        continue
                    r = c / b
                    worst = r if worst is None else max(worst, r)
                    cells.append(f"{r:.2f}")
                if worst is None:
                    continue
                limit = TARGETS.get((op, backend, base))
                target = f"≤ {limit} ({verdict(worst, limit)})" if limit else ""
                p(f"| {op} | {backend} | {base} | " + " | ".join(cells) + f" | {target} |")
    p("")

    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        p(f"### Growth: {fmt_rows(hi)} / {fmt_rows(lo)}\n")
        p(f"Target for the lookups: ≤ {GROWTH_TARGET} on each backend.\n")
        p("| operation | backend | " + " | ".join(IMPLEMENTATIONS["postgres"]) + " |")
        p("|---|---|" + "---:|" * len(IMPLEMENTATIONS["postgres"]))
        for op in OPERATIONS:
            for backend in backends:
                cells = []
                for impl in IMPLEMENTATIONS["postgres"]:
                    impl = impl if backend == "postgres" else {"postgres": "rusqlite"}.get(impl, impl)
                    a = medians.get((op, backend, impl, lo))
                    b = medians.get((op, backend, impl, hi))
                    if a is None or b is None or (backend == "sqlite" and impl.endswith("_bare")):
                        cells.append("–")
                        continue
                    g = b / a
                    mark = ""
                    if op.startswith("lookup_by_nickname") and impl == "crate" and g > GROWTH_TARGET:
                        mark = " **missed**"
                    cells.append(f"{g:.2f}{mark}")
                if all(c == "–" for c in cells):
                    continue
                p(f"| {op} | {backend} | " + " | ".join(cells) + " |")
        p("\n(On SQLite the third column is rusqlite.)\n")

    p("### Batch insert throughput (credentials per second, encryption included)\n")
    p("| backend/implementation | " + " | ".join(fmt_rows(s) for s in sizes) + " |")
    p("|---|" + "---:|" * len(sizes))
    for backend in backends:
        for impl in IMPLEMENTATIONS[backend]:
            cells = [medians.get(("insert_batch_1000", backend, impl, s)) for s in sizes]
            if all(c is None for c in cells):
                continue
            text = []
            for c in cells:
                if c is None:
                    text.append("–")
                    continue
                rate = 1000 / (c / 1e9)
                mark = ""
                if backend == "sqlite" and impl == "crate" and rate < INSERT_TARGET:
                    mark = " **missed**"
                text.append(f"{rate:,.0f}{mark}")
            p(f"| {backend}/{impl} | " + " | ".join(text) + " |")
    p(f"\nTarget: SQLite crate ≥ {INSERT_TARGET:,} per second.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
