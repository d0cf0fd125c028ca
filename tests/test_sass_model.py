"""bench.tools.sass_model on tiny hand-written SASS and TTGIR: loop detection, instruction counts,
the scoreboard replay (a load consumed in its own iteration costs its latency, one issued an
iteration ahead does not) and trip counts from the TTGIR's scalar code. No GPU, no compile."""
from bench.tools import sass_model as sm


def _sass(rows):
    """cuobjdump-style text: (opcode and operands, stall, write scoreboard, read scoreboard, wait mask)."""
    out = ["\tcode for sm_90a", "\t\tFunction : k"]
    for k, (text, stall, wbar, rbar, wait) in enumerate(rows):
        hi = (stall | 1 << 4 | wbar << 5 | rbar << 8 | wait << 11) << 41
        out.append(f"        /*{16 * k:04x}*/                   {text} ;   /* 0x0000000000000000 */")
        out.append(f"                                                     /* 0x{hi:016x} */")
    return "\n".join(out)


def _kernel(pipelined: bool):
    """Straight-line head (3), a loop of 6 from 0x0030 to 0x0080, an exit."""
    head = [("S2R R0, SR_TID.X", 1, 0, 7, 0), ("IMAD R2, R0, 0x4, RZ", 1, 7, 7, 1), ("MOV R4, RZ", 1, 7, 7, 0)]
    load = ("LDG.E R6, desc[UR4][R2.64]", 1, 2, 7, 0)
    use = ("FFMA R4, R6, R6, R4", 1, 7, 7, 1 << 2)  # waits on scoreboard 2
    alu = [("IADD3 R2, R2, 0x80, RZ", 1, 7, 7, 0), ("ISETP.NE.AND P0, PT, R2, R5, PT", 1, 7, 7, 0),
           ("IADD3 R7, R7, 0x1, RZ", 1, 7, 7, 0)]
    body = [use, *alu, load] if pipelined else [load, use, *alu]
    branch = ("@P0 BRA 0x30", 1, 7, 7, 0)
    return _sass(head + body + [branch, ("EXIT", 1, 7, 7, 0)])


def test_loop_detection_and_counts():
    instrs = sm.parse_sass(_kernel(False))
    assert len(instrs) == 10
    assert (instrs[3].base, instrs[3].wbar, instrs[4].wait) == ("LDG", 2, 4)
    loops = sm.find_loops(instrs)
    assert [(lp.start, lp.end) for lp in loops] == [(3, 8)]
    assert len(sm.own_body(loops, 0, len(instrs))) == 6
    assert len(sm.own_body(loops, None, len(instrs))) == 4  # head and exit


def test_nested_loops():
    rows = [("MOV R0, RZ", 1, 7, 7, 0), ("MOV R1, RZ", 1, 7, 7, 0), ("IADD3 R1, R1, 0x1, RZ", 1, 7, 7, 0),
            ("@P1 BRA 0x20", 1, 7, 7, 0), ("IADD3 R0, R0, 0x1, RZ", 1, 7, 7, 0), ("@P0 BRA 0x10", 1, 7, 7, 0),
            ("EXIT", 1, 7, 7, 0)]
    instrs = sm.parse_sass(_sass(rows))
    loops = sm.find_loops(instrs)
    assert [(lp.start, lp.end) for lp in loops] == [(1, 5), (2, 3)]
    assert loops[1].parent == 0 and loops[0].children == [1]
    assert len(sm.own_body(loops, 0, len(instrs))) == 3  # inner loop's two counted in the inner loop


def test_latency_exposed_unless_loads_run_ahead():
    latency = 600
    plain = sm.parse_sass(_kernel(False))
    piped = sm.parse_sass(_kernel(True))
    cyc_plain, info_plain = sm.warp_cycles(plain[3:9], latency=latency)
    cyc_piped, info_piped = sm.warp_cycles(piped[3:9], latency=latency)
    assert cyc_plain >= latency  # each iteration waits for its own load
    assert info_plain["exposed_waits"] == 1 and info_plain["carried_waits"] == 0
    assert info_piped["carried_waits"] == 1  # the wait is on the previous iteration's load
    assert cyc_piped <= cyc_plain
    assert sm.warp_cycles(plain[3:9], latency=2 * latency)[0] > cyc_plain


TTGIR = """\
module {
  tt.func public @k(%x_ptr: !tt.ptr<f32>, %N: i32 {tt.divisibility = 16 : i32}, %M: i32) attributes {noinline = false} {
    %c0_i32 = arith.constant 0 : i32 loc(#loc1)
    %c4_i32 = arith.constant 4 : i32 loc(#loc1)
    %pid = tt.get_program_id x : i32 loc(#loc1)
    %0 = arith.cmpi slt, %pid, %c4_i32 : i32 loc(#loc1)
    scf.if %0 {
      scf.for %i = %c0_i32 to %N step %c4_i32  : i32 {
        %v = tt.load %x_ptr : !tt.ptr<f32> loc(#loc2)
      } loc(#loc2)
    } else {
      %1 = arith.muli %pid, %M : i32 loc(#loc1)
      scf.for %j = %c0_i32 to %1 step %c4_i32  : i32 {
        scf.for %k = %c0_i32 to %j step %c4_i32  : i32 {
          %w = tt.load %x_ptr : !tt.ptr<f32> loc(#loc3)
        } loc(#loc3)
      } loc(#loc4)
    } loc(#loc1)
    tt.return loc(#loc1)
  } loc(#loc1)
} loc(#loc)
#loc = loc("k.py":1:0)
#loc1 = loc("k.py":2:0)
#loc2 = loc("k.py":3:0)
#loc3 = loc("k.py":5:0)
#loc4 = loc("k.py":4:0)
"""


def test_trip_counts_from_ttgir():
    loops, execs = sm.loop_executions(TTGIR, (8,), {"N": 64, "M": 2})
    assert [lp.index for lp in loops] == [0, 1, 2]
    assert ("k.py", 3) in loops[0].lines and ("k.py", 5) in loops[2].lines and ("k.py", 5) in loops[1].lines
    # programs 0-3 take the then-branch: 64 / 4 = 16 trips; half the programs
    assert execs[0][0] == 16 * 4 / 8
    # programs 4-7: the j loop runs ceil(2 * pid / 4) = 2, 3, 3, 4 trips (12 in all), the k loop
    # ceil(j / 4) = 0, 1, 2, ... in each: 1 + 3 + 3 + 6
    assert execs[1][0] == 12 / 8
    assert execs[2][0] == 13 / 8


def test_model_time_bounds():
    instrs = sm.parse_sass(_kernel(False))
    loops = sm.find_loops(instrs)
    prepared = {"parts": [("straight", 1.0, [instrs[k] for k in sm.own_body(loops, None, len(instrs))]),
                ("loop0", 100.0, [instrs[k] for k in sm.own_body(loops, 0, len(instrs))])],
                "programs": 132, "sass_instructions": len(instrs), "trips_unknown": 0}
    few = sm.model_time(prepared, warps=4, blocks=1, sms=132, dram_bytes=0, latency=500)
    assert few["bound"] == "latency" and few["waves"] == 1
    assert few["warp_instructions"] == (4 + 600) * 4 * 132
    # one warp alone waits 500 cycles each of 100 iterations: at least 100 x 500 / CLOCK_HZ
    assert few["estimate_us"] >= 100 * 500 / sm.CLOCK_HZ * 1e6
    dram = sm.model_time(prepared, warps=4, blocks=1, sms=132, dram_bytes=1e9, latency=500)
    assert dram["bound"] == "DRAM" and abs(dram["estimate_us"] - 1e9 / sm.DRAM_BPS * 1e6) < 0.1
