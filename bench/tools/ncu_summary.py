"""Nsight Compute's raw CSV -> one Markdown table, a row per profiled kernel launch, with, for each: time, DRAM bytes and throughput (% of peak), L1 and L2 hit rates, bytes
L1 requested from L2, achieved vs theoretical occupancy, registers, local-memory traffic (spills)
and the top warp-stall reasons. For the forward kernels of a ``bench.tools.one_step`` run at the
headline shape, the minimum and requested bytes ``bench.tools.traffic`` predicts stand beside them.

    ncu --import R.ncu-rep --page raw --csv --print-units base > R.csv
    python -m bench.tools.ncu_summary R.csv --dtype bfloat16 --layout nchw > R.md

Metrics the export lacks (a section not collected) show as "n/a".
"""
from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

UNIT = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9,
        "nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6, "ns": 1e-3, "us": 1.0, "ms": 1e3}
# what the table shows -> (the ncu metric it reads, the unit it is shown in: "MB" = 1e6 bytes,
# "us" = microseconds, "" = as exported)
METRIC = {
    "time": ("gpu__time_duration.sum", "us"),
    "dram_read": ("dram__bytes_read.sum", "MB"),
    "dram_write": ("dram__bytes_write.sum", "MB"),
    "dram_pct": ("dram__throughput.avg.pct_of_peak_sustained_elapsed", ""),
    "l1_hit": ("l1tex__t_sector_hit_rate.pct", ""),
    "l2_hit": ("lts__t_sector_hit_rate.pct", ""),
    "l2_to_l1_sectors": ("lts__t_sectors_srcunit_tex_op_read.sum", ""),
    "occ_achieved": ("sm__warps_active.avg.pct_of_peak_sustained_active", ""),
    "occ_theoretical": ("sm__maximum_warps_per_active_cycle_pct", ""),
    "registers": ("launch__registers_per_thread", ""),
    "local_ld": ("l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum", "MB"),
    "local_st": ("l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum", "MB"),
}
STALL = re.compile(r"smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio")
SECTOR = 32


def read_raw_csv(path: Path) -> list[dict[str, tuple[str, str]]]:
    """Rows of an ``ncu --page raw --csv`` export: ``{column: (value, unit)}`` per kernel launch.
    Lines before the header (ncu's own messages) are skipped; the row after the header gives units."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if '"Kernel Name"' in line), None)
    if start is None:
        raise SystemExit(f"{path}: not an Nsight Compute raw CSV export (no 'Kernel Name' header)")
    rows = list(csv.reader(lines[start:]))
    header, units, data = rows[0], rows[1], rows[2:]
    if units and units[header.index("Kernel Name")]:  # no units row (exported without units)
        units, data = [""] * len(header), rows[1:]
    return [dict(zip(header, zip(row, units))) for row in data if len(row) == len(header)]


def number(row: dict, metric: str, scale_to: str = "") -> float | None:
    """The metric's value as a float (thousands separators dropped), converted to MB (bytes) or
    µs (times) when ``scale_to`` is "MB" or "us"; None if absent or not a number."""
    if metric not in row:
        return None
    value, unit = row[metric]
    try:
        x = float(value.replace(",", ""))
    except ValueError:
        return None
    if scale_to == "MB":
        return x * UNIT.get(unit, 1.0) / 1e6
    if scale_to == "us":
        return x * UNIT.get(unit, 1e-3)  # ncu's base time unit is the nanosecond
    return x


def stalls(row: dict, top: int = 3) -> str:
    found = [(number(row, col), m.group(1)) for col in row if (m := STALL.fullmatch(col))]
    found = sorted(((x, name) for x, name in found if x), reverse=True)[:top]
    return ", ".join(f"{name} {x:.1f}" for x, name in found) or "n/a"


def summarize(rows: list[dict], predicted: list[dict] | None = None) -> str:
    """The Markdown table; ``predicted`` (bench.tools.traffic rows) is matched to the first rows in order."""
    def fmt(x, spec=".1f"):
        return "n/a" if x is None else format(x, spec)

    def add(*xs):
        return None if any(x is None for x in xs) else sum(xs)

    out = ["| # | kernel | grid x block | time µs | DRAM MB (r+w) | DRAM % peak | L1 hit % | L2 hit % "
           "| L2->L1 MB | occupancy % achieved / theoretical | regs | local MB | top stalls (cycles per issue) "
           "| predicted min / requested MB |",
           "|" + "---|" * 14]
    for i, row in enumerate(rows):
        n = {key: number(row, metric, unit) for key, (metric, unit) in METRIC.items()}
        l2_to_l1 = None if n["l2_to_l1_sectors"] is None else n["l2_to_l1_sectors"] * SECTOR / 1e6
        pred = predicted[i] if predicted and i < len(predicted) else None
        pred = "" if pred is None else f"{pred['minimum'] / 1e6:.1f} / {pred['requested'] / 1e6:.1f}"
        out.append(
            f"| {row.get('ID', ('', ''))[0]} | `{row['Kernel Name'][0]}` | {row.get('Grid Size', ('?', ''))[0]} x "
            f"{row.get('Block Size', ('?', ''))[0]} | {fmt(n['time'])} | {fmt(add(n['dram_read'], n['dram_write']))} "
            f"| {fmt(n['dram_pct'])} | {fmt(n['l1_hit'])} | {fmt(n['l2_hit'])} | {fmt(l2_to_l1)} "
            f"| {fmt(n['occ_achieved'])} / {fmt(n['occ_theoretical'])} | {fmt(n['registers'], '.0f')} "
            f"| {fmt(add(n['local_ld'], n['local_st']), '.3f')} | {stalls(row)} "
            f"| {pred} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.tools.ncu_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--dtype", help="with --layout: put bench.tools.traffic's forward prediction (headline "
                                        "case) beside the first three kernels")
    parser.add_argument("--layout", default="nchw", choices=("nchw", "channels_last"))
    args = parser.parse_args(argv)
    predicted = None
    if args.dtype:
        from ..cases import HEADLINE, Case
        from .traffic import forward_traffic

        predicted = forward_traffic(Case(op="fade", dtype=args.dtype, **HEADLINE), args.layout)
    print(f"Nsight Compute, {args.csv.name}" + (f" (prediction: bench.tools.traffic, headline case, {args.dtype} "
                                                f"{args.layout})" if predicted else ""))
    print()
    print(summarize(read_raw_csv(args.csv), predicted))


if __name__ == "__main__":
    main()
