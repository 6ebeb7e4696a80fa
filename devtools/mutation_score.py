"""Summarise ``mutmut results --all true`` (read on stdin) as killed / total per module."""

from __future__ import annotations

import collections
import sys


def scores(lines: list[str]) -> dict[str, collections.Counter]:
    """Per module (``vcd_core.tiling``), how many mutants ended in each status (killed, survived, ...)."""
    per_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in lines:
        name, sep, status = line.strip().rpartition(": ")
        if not sep or "__mutmut_" not in name:
            continue
        module = name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]
        per_module[module][status.strip()] += 1
    return per_module


def main() -> None:
    table = scores(sys.stdin.read().splitlines())
    for module, counts in sorted(table.items()):
        if set(counts) == {"not checked"}:
            continue
        total = sum(counts.values())
        killed = counts.get("killed", 0)
        rest = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "killed")
        print(f"{module:32s} killed {killed:4d}/{total:<4d} {100 * killed / total:5.1f}%   {rest}")
    if not table:
        print("no mutants (did mutmut run? see `python -m mutmut run` output)")


if __name__ == "__main__":
    main()
