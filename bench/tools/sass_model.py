"""A speed estimate per kernel launch from its SASS, without a GPU: issue floor, DRAM time,
occupancy, load pipelining, and a latency-aware time calibrated once on an H200.

``estimate(launch, arch)`` compiles one recorded launch (``fade_triton.testing.recorded_launches``
with ``keep_args=True``, or ``bench.tools.aot.record_headline``) and returns the columns
``bench.tools.aot`` adds to its report. ``python -m bench.tools.sass_model`` records the headline
case (bf16 NCHW FADE forward+backward on sm_90 by default), estimates each launch and prints the
estimate beside the H200's Nsight Compute time (``H200_NCU``); ``--launch N`` prints every column
of launch N alone. On one launch of your own::

    from bench.tools.aot import record_headline
    from bench.tools.sass_model import estimate
    launches = record_headline(["fade"], ["fwd+bwd"], ["bfloat16"], ["nchw"], 90)  # or recorded_launches
    print(estimate(launches[2], 90))  # reassemble_fwd: estimate_us, issue_floor_us, dram_us, ...

How the numbers are made (docs/PERFORMANCE.md, "Speed from the SASS"):

1. SASS from ``cuobjdump -sass``, source lines from ``nvdisasm --print-line-info``. A loop is a
   backward ``BRA``; its body, the instructions from the target to the branch (nested loops'
   bodies counted once, in the inner loop).
2. Trip counts: the TTGIR's scalar code (program ids, integer arguments, ``scf.for`` bounds,
   ``scf.if`` conditions) is evaluated for the launch's programs (all of them, or a sample of
   ``PROGRAM_SAMPLE``), which gives each ``scf.for`` body's executions per program. A SASS loop
   takes the ``scf.for`` whose body covers its source lines best (the innermost on a tie, inside
   the enclosing SASS loop's); source loops with the same lines pair up with their SASS loops in
   order, or share their executions when the numbers differ. Code outside SASS loops counts once per program
   (code in branches not taken included: an overcount for kernels with many branches).
3. Single-warp time per loop iteration: the SASS's own control bits (stall cycles, the scoreboard
   each instruction sets and those it waits on) replayed for three iterations, a global load's
   scoreboard released ``GLOBAL_LATENCY`` cycles after issue, any other variable-latency
   instruction's after ``SHORT_LATENCY``, a ``WARPGROUP.DEPBAR`` after ``HGMMA_CYCLES`` per
   outstanding HGMMA. The last iteration's cycles are the loop's steady state: loads consumed in the
   iteration that issues them cost their whole latency, loads issued an iteration ahead do not.
4. Per SM, ``blocks`` programs run together (theoretical occupancy); each of the 4 schedulers
   issues one instruction per cycle for its ``warps / 4`` warps, so a round of programs takes
   max(one warp's latency-bound cycles, warps per scheduler x instructions per warp) cycles.
   Time = max(ceil(programs / (SMs x blocks)) x that / CLOCK_HZ, DRAM bytes / DRAM_BPS).

An estimate, not a measurement: it ignores caches (the latency is one average over hits and
misses, fitted once on triton 3.6's SASS, the H200's compiler), bandwidth contention below the DRAM
roof, barriers between warps, dual issue, and programs that differ (it takes their mean).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# ---- constants -----------------------------------------------------------------------------------
# H100 SXM issue rate the project's issue floor uses (docs/notes: 132 SMs x 4 warp-instr/clk x 1.755 GHz).
ISSUE_RATE_H100 = 0.93e12  # warp-instructions per second
CLOCK_HZ = 1.98e9  # H200 SM clock (max boost); ncu may have run it lower: the fitted latency absorbs that
DRAM_BPS = 4.248e12  # bytes/s: the H200's measured 1 GiB copy_ rate (gpu-h200-2026-11-30)
GLOBAL_LATENCY = 1000  # cycles from a global load's issue to its data: fitted once on H200_NCU (calibrate())
SHORT_LATENCY = 30  # cycles: shared memory, constants, special registers, MUFU (not fitted)
HGMMA_CYCLES = 32  # cycles per outstanding HGMMA before WARPGROUP.DEPBAR releases (not fitted)
PROGRAM_SAMPLE = 256  # programs whose scalar code is evaluated for trip counts
# Per compute capability: (SM clock Hz, DRAM bytes/s, issue rate in warp-instructions/s). sm_90 is the
# H200 the latency was fitted on (the issue rate the H100 figure above); sm_80 an A100 at its nominal
# 1.41 GHz and 2.0 TB/s, not calibrated (the latency is assumed the same in cycles).
MACHINES = {90: (CLOCK_HZ, DRAM_BPS, ISSUE_RATE_H100), 80: (1.41e9, 2.0e12, 108 * 4 * 1.41e9)}
GLOBAL_OPS = ("LDG", "LD", "ATOMG", "ATOM", "LDGSTS", "UTMALDG", "UBLKCP")

# The calibration data, the only copy: the H200's Nsight Compute table of the bf16 NCHW headline
# forward+backward, one row per launch in the order
# ``record_headline(["fade"], ["fwd+bwd"], ["bfloat16"], ["nchw"], 90)`` makes them: (launch, µs,
# DRAM MB, theoretical occupancy %, registers). Source: /work/shared/notes/gpu-h200-2026-11-30.md,
# "Where the time goes": main c242b72 on one H200 (132 SMs), torch 2.11, triton 3.6.0,
# ``ncu --set full``, 2026-11-30. The registers are triton 3.6's: fit with triton 3.6's SASS.
H200_NCU = [
    ("conv3x3, low-res (fwd)", 101.0, 17, 25.0, 115),
    ("conv3x3, high-res (fwd)", 528.0, 82, 12.5, 164),
    ("reassemble_fwd", 217.0, 153, 12.5, 255),
    ("reassemble_bwd", 317.0, 193, 12.5, 252),
    ("reassemble_bwd_feat", 489.0, 96, 12.5, 254),
    ("conv3x3, en input grad", 309.0, 136, 12.5, 142),
    ("conv3x3, de input grad", 80.0, 21, 12.5, 146),
    ("conv3x3 weight grad, high-res", 494.0, 110, 12.5, 190),
    ("conv3x3 weight grad, low-res", 177.0, 22, 12.5, 231),
    ("unfold_weight_grad", 171.0, 30, 12.5, 222),
]


# ---- SASS ----------------------------------------------------------------------------------------
@dataclass
class Instr:
    addr: int
    op: str  # full opcode with modifiers, e.g. "LDG.E.U16.CONSTANT"
    text: str
    stall: int = 1
    wbar: int = 7  # scoreboard set when the result is written (7: none)
    rbar: int = 7  # scoreboard set when the sources are read (7: none)
    wait: int = 0  # mask of scoreboards waited on before issue
    line: tuple | None = None  # (file name, line) from nvdisasm's line info

    @property
    def base(self) -> str:
        return self.op.split(".")[0]

    @property
    def target(self) -> int | None:
        m = re.search(r"\bBRA\S*\s+(?:\S+,\s*)?`?\(?(?:\.L_x_\d+)?\)?\s*0x([0-9a-f]+)", self.text)
        return int(m.group(1), 16) if m else None


_INSTR = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)(.*?);\s*(?:/\*\s*0x([0-9a-f]{16})\s*\*/)?\s*$")
_HI = re.compile(r"^\s*/\*\s*0x([0-9a-f]{16})\s*\*/\s*$")


def parse_sass(text: str) -> list[Instr]:
    """Instructions of ``cuobjdump -sass`` output (one kernel), with their control bits."""
    out: list[Instr] = []
    pending = None
    for raw in text.splitlines():
        m = _INSTR.match(raw)
        if m:
            pending = Instr(int(m.group(1), 16), m.group(3), (m.group(3) + m.group(4)).strip())
            out.append(pending)
            continue
        h = _HI.match(raw)
        if h and pending is not None:  # the second 64-bit word: control bits in bits 41-62
            ctrl = int(h.group(1), 16) >> 41
            pending.stall, pending.wbar = ctrl & 0xF, (ctrl >> 5) & 7
            pending.rbar, pending.wait = (ctrl >> 8) & 7, (ctrl >> 11) & 0x3F
            pending = None
    return out


def add_line_info(instrs: list[Instr], nvdisasm_text: str) -> None:
    """Attach ``(file, line)`` to each instruction from ``nvdisasm --print-line-info`` output."""
    by_addr = {i.addr: i for i in instrs}
    current = None
    for raw in nvdisasm_text.splitlines():
        m = re.search(r'//## File "([^"]+)", line (\d+)', raw)
        if m:
            current = (Path(m.group(1)).name, int(m.group(2)))
            continue
        a = re.match(r"\s*/\*([0-9a-f]+)\*/", raw)
        if a and int(a.group(1), 16) in by_addr:
            by_addr[int(a.group(1), 16)].line = current


@dataclass
class Loop:
    start: int  # index of the first body instruction (the branch target)
    end: int  # index of the backward branch
    parent: int | None = None
    children: list = field(default_factory=list)


def find_loops(instrs: list[Instr]) -> list[Loop]:
    """Loops as backward branches, outermost first, with their nesting."""
    index = {ins.addr: k for k, ins in enumerate(instrs)}
    loops = []
    for k, ins in enumerate(instrs):
        t = ins.target
        if ins.base == "BRA" and t is not None and t < ins.addr and t in index and index[t] != k:
            loops.append(Loop(index[t], k))
    loops.sort(key=lambda lp: (lp.start, -lp.end))
    for j, lp in enumerate(loops):
        enclosing = [i for i, o in enumerate(loops) if i != j and o.start <= lp.start and lp.end <= o.end
                     and (o.end - o.start) > (lp.end - lp.start)]
        if enclosing:
            lp.parent = min(enclosing, key=lambda i: loops[i].end - loops[i].start)
            loops[lp.parent].children.append(j)
    return loops


def own_body(loops: list[Loop], j: int, n: int) -> list[int]:
    """Instruction indices of loop ``j`` (or of the code outside every loop, ``j=None``) that are
    not in a loop nested inside it."""
    inner = loops[j].children if j is not None else [i for i, lp in enumerate(loops) if lp.parent is None]
    lo, hi = (loops[j].start, loops[j].end) if j is not None else (0, n - 1)
    skip = set()
    for c in inner:
        skip.update(range(loops[c].start, loops[c].end + 1))
    return [k for k in range(lo, hi + 1) if k not in skip]


def _is_global(ins: Instr) -> bool:
    return ins.base in GLOBAL_OPS


def warp_cycles(body: list[Instr], iterations: int = 3, latency: float = GLOBAL_LATENCY) -> tuple[float, dict]:
    """One warp's cycles per iteration of ``body`` (steady state: the last of ``iterations``),
    from the stall counts and scoreboards; and how its global loads meet their consumers."""
    ready = [0.0] * 6  # when each scoreboard is released
    is_global = [False] * 6
    hgmma_ready = 0.0
    t = 0.0
    ends = []
    exposed = 0  # waits on a global load's scoreboard in the last iteration
    before_first_wait = None
    carried = 0
    for it in range(iterations):
        last = it == iterations - 1
        issued_here = [False] * 6
        loads = 0
        for ins in body:
            for b in range(6):
                if ins.wait >> b & 1:
                    if last and is_global[b] and ready[b] > t:
                        exposed += 1
                        if issued_here[b]:
                            before_first_wait = loads if before_first_wait is None else before_first_wait
                        else:
                            carried += 1
                    t = max(t, ready[b])
                    is_global[b] = False
            if ins.op.startswith("WARPGROUP.DEPBAR"):
                t = max(t, hgmma_ready)
            elif ins.base == "DEPBAR":  # DEPBAR.LE SBn, k: treat as a full wait on SBn
                m = re.search(r"SB(\d)", ins.text)
                if m:
                    t = max(t, ready[int(m.group(1))])
            if ins.base == "HGMMA":
                hgmma_ready = max(hgmma_ready, t) + HGMMA_CYCLES
            g = _is_global(ins)
            if ins.wbar < 6:
                ready[ins.wbar] = max(ready[ins.wbar], t + (latency if g else SHORT_LATENCY))
                is_global[ins.wbar] = is_global[ins.wbar] or g
                issued_here[ins.wbar] = issued_here[ins.wbar] or g
            if ins.rbar < 6:
                ready[ins.rbar] = max(ready[ins.rbar], t + SHORT_LATENCY)
            loads += g
            t += max(ins.stall, 1)
        ends.append(t)
    cycles = ends[-1] - (ends[-2] if len(ends) > 1 else 0.0)
    return cycles, {"exposed_waits": exposed, "loads_before_first_use": before_first_wait or 0, "carried_waits": carried}


# ---- trip counts from the TTGIR --------------------------------------------------------------------
def _loc_lines(ttgir: str) -> dict:
    """#locN -> set of (file name, line) it names (call sites included)."""
    raw = dict(re.findall(r"^(#loc\d*) = loc\((.*)\)\s*$", ttgir, re.MULTILINE))
    memo: dict = {}

    def resolve(name, depth=0):
        if name in memo or depth > 50:
            return memo.get(name, set())
        body = raw.get(name, "")
        found = {(Path(f).name, int(n)) for f, n in re.findall(r'"([^"]+\.py)":(\d+):\d+', body)}
        for ref in re.findall(r"#loc\d*", body):
            if ref != name:
                found |= resolve(ref, depth + 1)
        memo[name] = found
        return found

    return {name: resolve(name) for name in raw}


@dataclass
class Region:
    kind: str  # "func", "for", "then", "else"
    header: str = ""
    ops: list = field(default_factory=list)  # str (scalar op lines) or Region
    lines: set = field(default_factory=set)  # source lines of every op inside (nested included)
    index: int = -1  # for loops: their order in the TTGIR


_SCALAR = re.compile(r":\s*(i1|i32|i64|index)\s*(?:loc\(.*\))?\s*$")


def parse_ttgir(ttgir: str) -> tuple[Region, list[Region], list[str]]:
    """The kernel's control skeleton: scalar ops, ``scf.for`` and ``scf.if`` regions; the loops in
    order; the i32/i64 argument names."""
    locs = _loc_lines(ttgir)
    header = re.search(r"tt\.func public @\w+\((.*?)\) attributes", ttgir, re.DOTALL)
    args = re.findall(r"%([A-Za-z_]\w*): (?:i32|i64)\b", header.group(1)) if header else []
    root = Region("func")
    stack = [root]
    loops: list[Region] = []
    in_func = False
    for line in ttgir.splitlines():
        s = line.strip()
        if not in_func:
            in_func = s.startswith("tt.func public")
            continue
        for ref in re.findall(r"loc\((#loc\d*)\)", s):
            for r in stack[1:]:
                r.lines |= locs.get(ref, set())
        if re.search(r"\bscf\.for\b", s) and s.endswith("{"):
            r = Region("for", s, index=len(loops))
            loops.append(r)
            stack[-1].ops.append(r)
            stack.append(r)
        elif re.search(r"\bscf\.if\b", s) and s.endswith("{"):
            r = Region("then", s)
            stack[-1].ops.append(r)
            stack.append(r)
        elif s.startswith("} else {"):
            done = stack.pop()
            r = Region("else", done.header)
            done.ops.append(r)  # the else branch hangs off its then-region as its last op
            stack.append(r)
        elif s.startswith("}"):
            if len(stack) == 1:
                break
            stack.pop()
        elif s.endswith("{"):  # another region (tt.reduce, scf.while, ...): skip its ops
            r = Region("other", s)
            stack[-1].ops.append(r)
            stack.append(r)
        elif _SCALAR.search(s.split(" loc(")[0] + " ") or re.search(r"=\s*tt\.get_program_id", s):
            stack[-1].ops.append(s)

    def gather(r):  # each region's lines include those of the regions inside it
        for o in r.ops:
            if isinstance(o, Region):
                r.lines |= gather(o)
        return r.lines

    gather(root)
    return root, loops, args


_BIN = {"addi": lambda a, b: a + b, "subi": lambda a, b: a - b, "muli": lambda a, b: a * b,
        "divsi": lambda a, b: int(a / b) if b else None, "divui": lambda a, b: a // b if b else None,
        "remsi": lambda a, b: int(math.fmod(a, b)) if b else None, "remui": lambda a, b: a % b if b else None,
        "ceildivsi": lambda a, b: -(-a // b) if b else None, "floordivsi": lambda a, b: a // b if b else None,
        "minsi": min, "maxsi": max, "minui": min, "maxui": max, "andi": lambda a, b: a & b,
        "ori": lambda a, b: a | b, "xori": lambda a, b: a ^ b, "shli": lambda a, b: a << b,
        "shrsi": lambda a, b: a >> b, "shrui": lambda a, b: a >> b}
_CMP = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "slt": lambda a, b: a < b, "sle": lambda a, b: a <= b,
        "sgt": lambda a, b: a > b, "sge": lambda a, b: a >= b, "ult": lambda a, b: a < b, "ule": lambda a, b: a <= b,
        "ugt": lambda a, b: a > b, "uge": lambda a, b: a >= b}


def _eval_op(s: str, env: dict, pid: tuple) -> None:
    m = re.match(r"(%[\w.#]+)(?::\d+)?\s*=\s*([\w.]+)\s*(.*)$", s)
    if not m:
        return
    res, op, rest = m.groups()
    rest = rest.split(" loc(")[0]
    vals = [env.get(v) for v in re.findall(r"%[\w.#]+", rest.split(" : ")[0])]
    v = None
    if op == "arith.constant":
        c = re.match(r"(-?\d+|true|false)\s*:", rest)
        v = None if not c else (1 if c.group(1) == "true" else 0 if c.group(1) == "false" else int(c.group(1)))
    elif op == "tt.get_program_id":
        v = pid["xyz".index(rest.strip()[0])] if rest.strip()[:1] in "xyz" else None
    elif op == "tt.get_num_programs":
        v = None
    elif op.startswith("arith.") and op[6:] in _BIN and len(vals) == 2 and None not in vals:
        v = _BIN[op[6:]](*vals)
    elif op == "arith.cmpi":
        c = re.match(r"(\w+),", rest)
        if c and len(vals) == 2 and None not in vals:
            v = int(_CMP[c.group(1)](*vals))
    elif op == "arith.select" and len(vals) == 3 and vals[0] is not None:
        v = vals[1] if vals[0] else vals[2]
    elif op in ("arith.extsi", "arith.extui", "arith.trunci", "arith.index_cast", "arith.bitcast") and vals:
        v = vals[0]
    env[res] = v


def _run(region: Region, env: dict, pid: tuple, weight: float, counts: dict) -> None:
    for o in region.ops:
        if isinstance(o, str):
            _eval_op(o, env, pid)
        elif o.kind == "for":
            m = re.search(r"scf\.for (%[\w.#]+) = (%[\w.#]+) to (%[\w.#]+) step (%[\w.#]+)", o.header)
            lb, ub, st = (env.get(x) for x in m.group(2, 3, 4)) if m else (None, None, None)
            trips = max(0, -(-(ub - lb) // st)) if None not in (lb, ub, st) and st > 0 else None
            counts.setdefault(o.index, [0.0, False])
            if trips is None:  # bounds unknown: count one trip per entry, flagged
                trips, counts[o.index][1] = 1, True
            counts[o.index][0] += weight * trips
            nested = any(isinstance(x, Region) for x in o.ops)
            if nested and trips:
                sample = sorted({lb + st * round(k * (trips - 1) / 3) for k in range(4)}) if lb is not None else [None]
                for iv in sample:
                    env[m.group(1)] = iv
                    _run(o, env, pid, weight * trips / len(sample), counts)
            else:
                env[m.group(1)] = lb
                _run(o, env, pid, 0.0, counts)  # scalar ops only, no loops below
        elif o.kind == "then":
            c = re.search(r"scf\.if (%[\w.#]+)", o.header)
            cond = env.get(c.group(1)) if c else None
            else_region = o.ops[-1] if o.ops and isinstance(o.ops[-1], Region) and o.ops[-1].kind == "else" else None
            then_part = Region("then", o.header, o.ops[:-1] if else_region else o.ops)
            p = 0.5 if cond is None else float(bool(cond))
            if p:
                _run(then_part, env, pid, weight * p, counts)
            if else_region and p < 1:
                _run(else_region, env, pid, weight * (1 - p), counts)


def loop_executions(ttgir: str, grid: tuple, scalars: dict) -> tuple[list[Region], dict]:
    """Per ``scf.for`` (TTGIR order): mean body executions per program over the launch's programs,
    and whether its bounds could not be evaluated."""
    root, loops, _ = parse_ttgir(ttgir)
    grid = tuple(grid) + (1,) * (3 - len(grid))
    n = grid[0] * grid[1] * grid[2]
    picks = range(n) if n <= PROGRAM_SAMPLE else sorted({round(k * (n - 1) / (PROGRAM_SAMPLE - 1)) for k in range(PROGRAM_SAMPLE)})
    counts: dict = {}
    base = {f"%{k}": int(v) for k, v in scalars.items() if isinstance(v, (int, bool))}
    for lin in picks:
        pid = (lin % grid[0], lin // grid[0] % grid[1], lin // (grid[0] * grid[1]))
        _run(root, dict(base), pid, 1.0, counts)
    k = len(picks)
    return loops, {i: (c / k, flag) for i, (c, flag) in counts.items()}


def _descendants(region: Region) -> set:
    """Indices of the ``scf.for`` regions nested (at any depth) inside ``region``."""
    out = set()
    for o in region.ops:
        if isinstance(o, Region):
            if o.kind == "for":
                out.add(o.index)
            out |= _descendants(o)
    return out


def map_loops(instrs: list[Instr], loops: list[Loop], regions: list[Region], execs: dict) -> list[float | None]:
    """Body executions per program of each SASS loop: it takes the ``scf.for`` whose body holds
    the most of its source lines (the innermost among the best). Source loops with the same lines
    (unrolled copies in the source, ``tl.static_range``) and the SASS loops that chose them pair
    up in order when their numbers agree, else share the executions equally. None: no match."""
    inside = {r.index: _descendants(r) for r in regions}
    choice, chosen = [], []
    for j, lp in enumerate(loops):  # outermost first: a nested SASS loop looks inside its parent's choice
        lines = {instrs[k].line for k in own_body(loops, j, len(instrs)) if instrs[k].line}
        parent = chosen[lp.parent] if lp.parent is not None else None
        pool = [r for r in regions if parent is None or r.index in inside[parent.index]] if parent else regions
        best, best_key = None, None
        for r in pool or regions:
            if not lines or not r.lines:
                continue
            score = len(lines & r.lines) / len(lines)
            key = (round(score, 2), -len(r.lines))
            if score >= 0.3 and (best_key is None or key > best_key):
                best, best_key = r, key
        chosen.append(best)
        choice.append(frozenset(best.lines) if best else None)
    out: list[float | None] = [None] * len(loops)
    for group in {c for c in choice if c is not None}:
        sass = [j for j, c in enumerate(choice) if c == group]
        source = [r.index for r in regions if frozenset(r.lines) == group]
        if len(sass) == len(source):
            for j, i in zip(sass, source):
                out[j] = execs.get(i, (0.0, False))[0]
        else:
            total = sum(execs.get(i, (0.0, False))[0] for i in source)
            for j in sass:
                out[j] = total / len(sass)
    return out


# ---- the estimate ----------------------------------------------------------------------------------
def prepare(sass: str, nvdisasm: str, ttgir: str, grid: tuple, scalars: dict) -> dict:
    """What the time model needs from one compiled launch: each region of code (the code outside
    loops, each SASS loop's own body) with its executions per program."""
    instrs = parse_sass(sass)
    add_line_info(instrs, nvdisasm)
    loops = find_loops(instrs)
    regions, execs = loop_executions(ttgir, grid, scalars)
    mapped = map_loops(instrs, loops, regions, execs)
    g = tuple(grid) + (1,) * (3 - len(grid))
    parts = [("straight", 1.0, [instrs[k] for k in own_body(loops, None, len(instrs))])]
    unknown = sum(e is None for e in mapped)  # no source loop matches (a loop the compiler made): once per entry
    parts += [(f"loop{j}", 1.0 if e is None else e, [instrs[k] for k in own_body(loops, j, len(instrs))])
              for j, e in enumerate(mapped)]
    return {"parts": parts, "programs": g[0] * g[1] * g[2], "sass_instructions": len(instrs), "trips_unknown": unknown}


def model_time(prepared: dict, warps: int, blocks: int, sms: int, dram_bytes: float,
               latency: float = GLOBAL_LATENCY, arch: int = 90) -> dict:
    """The model's columns from ``prepare``'s regions; ``blocks``: programs resident per SM;
    ``arch``: which of ``MACHINES`` (clock, DRAM rate, issue rate)."""
    clock, dram_bps, issue_rate = MACHINES[arch]
    parts = []
    for name, e, body in prepared["parts"]:
        cyc, info = warp_cycles(body, iterations=1 if name == "straight" else 3, latency=latency)
        info.update(ldg=sum(_is_global(i) for i in body),
                    async_copies=sum(i.base in ("LDGSTS", "UTMALDG", "UBLKCP") for i in body),
                    math=sum(i.base in ("HGMMA", "HMMA", "FFMA") for i in body))
        parts.append((name, e, len(body), cyc, info))
    programs = prepared["programs"]
    warp_instr = sum(e * n for _, e, n, _, _ in parts)  # per warp per program
    warp_lat = sum(e * c for _, e, _, c, _ in parts)  # cycles of one warp on its own
    total_instr = warp_instr * warps * programs
    per_sched = blocks * warps / 4  # warps per scheduler
    round_cycles = max(warp_lat, per_sched * warp_instr)
    waves = math.ceil(programs / (sms * blocks))
    compute_s = waves * round_cycles / clock
    dram_s = dram_bytes / dram_bps
    bound = "DRAM" if dram_s > compute_s else ("latency" if warp_lat > per_sched * warp_instr else "issue")
    hot = max(parts[1:], key=lambda p: p[1] * p[3], default=None)
    pipelining = "no loop"
    if hot:
        i = hot[4]
        pipelining = (f"{hot[0]} ({hot[2]} instr x {hot[1]:.4g}/program): {i['ldg']} global loads,"
                      f" {i['exposed_waits']} waits on them ({i['loads_before_first_use']} issued before the first),"
                      f" {i['carried_waits']} on loads of the previous iteration; {i['async_copies']} cp.async/TMA;"
                      f" {i['math']} HGMMA/HMMA/FFMA")
    return {"warp_instructions": round(total_instr), "issue_floor_us": round(total_instr / issue_rate * 1e6, 1),
            "dram_bytes": round(dram_bytes), "dram_us": round(dram_s * 1e6, 1),
            "latency_us": round(waves * warp_lat / clock * 1e6, 1),
            "estimate_us": round(max(compute_s, dram_s) * 1e6, 1), "bound": bound, "pipelining": pipelining,
            "waves": waves, "trips_unknown": prepared["trips_unknown"],
            "loop_detail": "; ".join(f"{n} {k} instr x {e:.4g} = {c:.0f} cycles/warp" for n, e, k, c, _ in parts)}


def analyse(sass: str, nvdisasm: str, ttgir: str, grid: tuple, scalars: dict, warps: int, blocks: int,
            sms: int, dram_bytes: float, latency: float = GLOBAL_LATENCY, arch: int = 90) -> dict:
    """The model on one compiled launch (texts as the tools print them)."""
    return model_time(prepare(sass, nvdisasm, ttgir, grid, scalars), warps, blocks, sms, dram_bytes, latency, arch)


def _tools():
    import triton

    cuobjdump = triton.knobs.nvidia.cuobjdump.path
    return cuobjdump, str(Path(cuobjdump).with_name("nvdisasm"))


def disassemble(cubin: bytes) -> tuple[str, str]:
    """(``cuobjdump -sass``, ``nvdisasm --print-line-info``) of a cubin."""
    cuobjdump, nvdisasm = _tools()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        sass = subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
        lines = subprocess.run([nvdisasm, "--print-line-info", "-c", str(path)], capture_output=True, text=True,
                               check=True).stdout
    return sass, lines


def launch_bytes(launch) -> int:
    """The launch's minimum DRAM bytes: each distinct tensor argument moved once."""
    import torch

    seen, total = set(), 0
    for a in launch.args:
        if isinstance(a, torch.Tensor) and (a.data_ptr(), a.numel()) not in seen:
            seen.add((a.data_ptr(), a.numel()))
            total += a.numel() * a.element_size()
    return total


def estimate_compiled(launch, compiled, blocks: int, arch: int, keep: bool = False) -> dict:
    """The model's columns for a launch already compiled (``triton.compile`` result) with
    ``blocks`` programs resident per SM; ``keep``: also its inputs, as ``_model`` (for refits)."""
    from .aot import GPUS

    sass, lines = disassemble(compiled.asm["cubin"])
    scalars = {name: a for name, a in zip(launch.kernel.arg_names, launch.args) if isinstance(a, (int, bool))}
    inputs = {"sass": sass, "nvdisasm": lines, "ttgir": compiled.asm["ttgir"], "grid": tuple(launch.grid), "scalars": scalars,
              "warps": compiled.metadata.num_warps, "blocks": blocks, "sms": GPUS[arch][1], "dram_bytes": launch_bytes(launch),
              "arch": arch}
    out = analyse(**inputs)
    return {**out, "_model": inputs} if keep else out


def estimate(launch, arch: int = 90) -> dict:
    """Compile one recorded launch for sm_<arch> and estimate it: issue floor, DRAM time,
    occupancy, load pipelining, latency-aware time (see the module's docstring)."""
    from .aot import compile_launch

    return compile_launch(launch, arch)


def calibrate(models: list[dict], measured: list[float]) -> tuple[int, list[float]]:
    """The GLOBAL_LATENCY (cycles, steps of 25) that brings the most estimates within 30% of
    ``measured`` (µs), the smallest worst error among those on a tie; and the errors it leaves.
    ``models``: ``compile_launch(..., keep_model=True)["_model"]`` per launch."""
    keys = ("sass", "nvdisasm", "ttgir", "grid", "scalars")
    prepared = [(prepare(*(m[k] for k in keys)), m) for m in models]  # sm_90 launches
    best = None
    for lat in range(200, 3001, 25):
        errs = [model_time(p, m["warps"], m["blocks"], m["sms"], m["dram_bytes"], lat)["estimate_us"] / t - 1
                for (p, m), t in zip(prepared, measured)]
        within = [abs(e) for e in errs if abs(e) <= 0.3]
        key = (-len(within), max(within, default=0.0))
        if best is None or key < best[0]:
            best = (key, lat, errs)
    return best[1], best[2]


def main(argv=None):
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("bench.tools.sass_model compiles kernels: unset TRITON_INTERPRET")
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    parser = argparse.ArgumentParser(prog="python -m bench.tools.sass_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="CSV of the calibration run")
    parser.add_argument("--fit", action="store_true", help="refit GLOBAL_LATENCY on H200_NCU and print it")
    parser.add_argument("--launch", type=int, default=None, help="print every column of this launch only")
    args = parser.parse_args(argv)
    import triton

    from .aot import GPUS, compile_launch, record_headline

    launches = record_headline(["fade"], ["fwd+bwd"], ["bfloat16"], ["nchw"], 90)
    if args.launch is not None:
        for k, v in estimate(launches[args.launch], 90).items():
            print(f"{k:18s} {v}")
        return 0
    if len(launches) != len(H200_NCU):
        sys.exit(f"{len(launches)} launches recorded, {len(H200_NCU)} measured: the kernels changed; match them by hand")
    rows = [compile_launch(launch, 90, keep_model=True) for launch in launches]
    models = []
    for r, (_, _, _, occupancy, _) in zip(rows, H200_NCU):
        # the H200's occupancy: the one the measured code ran at, whatever this compiler gives
        blocks = round(occupancy / 100 * GPUS[90][4] / r["warps"])
        models.append({**r["_model"], "blocks": blocks})
    measured = [m[1] for m in H200_NCU]
    if args.fit:
        lat, _ = calibrate(models, measured)
        print(f"fitted GLOBAL_LATENCY = {lat} cycles (module: {GLOBAL_LATENCY})")
    print(f"triton {triton.__version__}; 'at H200 occ.': the estimate at the occupancy the H200 measured; "
          f"'here': at this compile's")
    print(f"{'launch':30s} {'H200 us':>7s} {'at H200 occ.':>12s} {'err':>5s} {'here':>7s} {'regs':>9s} {'issue':>6s} "
          f"{'DRAM':>5s}  bound")
    out = []
    for (name, meas, dram_mb, occupancy, regs), r, m in zip(H200_NCU, rows, models):
        keys = ("sass", "nvdisasm", "ttgir", "grid", "scalars")
        cal = model_time(prepare(*(m[k] for k in keys)), m["warps"], m["blocks"], m["sms"], m["dram_bytes"])
        err = cal["estimate_us"] / meas - 1
        print(f"{name:30s} {meas:7.0f} {cal['estimate_us']:12.1f} {100 * err:+4.0f}% {r['estimate_us']:7.1f} "
              f"{r['regs']:>4}/{regs:<4} {cal['issue_floor_us']:6.1f} {cal['dram_us']:5.1f}  {cal['bound']}")
        out.append({"launch": name, "h200_ncu_us": meas, "h200_occupancy_pct": occupancy, "h200_regs": regs,
                    "estimate_at_h200_occupancy_us": cal["estimate_us"], "error": f"{100 * err:+.0f}%",
                    "kernel": r["kernel"], "grid": r["grid"], "regs": r["regs"], "occupancy": r["occupancy"],
                    "estimate_us": r["estimate_us"], "issue_floor_us": cal["issue_floor_us"], "dram_us": cal["dram_us"],
                    "h200_dram_mb": dram_mb, "latency_us": cal["latency_us"], "bound": cal["bound"],
                    "pipelining": cal["pipelining"], "loop_detail": cal["loop_detail"],
                    "triton": triton.__version__, "global_latency": GLOBAL_LATENCY})
    if args.out:
        import csv

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, list(out[0]))
            w.writeheader()
            w.writerows(out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
