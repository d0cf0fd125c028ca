"""The tools the GPU session runs under compute-sanitizer and Nsight Compute, checked on CPU:
``bench.tools.one_step`` (one checked call per op) and ``bench.tools.ncu_summary`` (ncu's raw CSV -> table)."""
from pathlib import Path

import torch

import fade_triton as ft

DATA = Path(__file__).parent / "data"


def test_one_step_passes_when_the_op_is_right(capsys):
    from bench.tools import one_step

    assert one_step.main(["--ops", "carafe", "fade_lite", "--groups", "4", "--mode", "fwd"]) == 0
    assert capsys.readouterr().out.count(": ok;") == 2


def test_one_step_fails_on_an_element_no_kernel_wrote(monkeypatch, capsys):
    """The op returns an output it never wrote: poisoned to NaN, the check must fail."""
    from bench import cases
    from bench.tools import one_step

    real = ft.carafe

    def unwritten(x, masks, k, g, s, backend="auto"):
        out = real(x, masks, k, g, s, backend=backend)
        return torch.empty_like(out) if backend == "triton" else out

    monkeypatch.setattr(cases.ft, "carafe", unwritten)
    assert one_step.main(["--ops", "carafe", "--groups", "1", "--mode", "fwd"]) == 1
    assert "mismatch" in capsys.readouterr().out


def test_ncu_summary_reads_values_units_and_stalls():
    from bench.tools.ncu_summary import read_raw_csv, summarize

    rows = read_raw_csv(DATA / "ncu" / "raw_export.csv")
    assert [r["Kernel Name"][0] for r in rows] == ["conv3x3_kernel", "reassemble_fwd_kernel"]
    table = summarize(rows, [{"minimum": 21.1e6, "requested": 68.7e6}]).splitlines()
    conv = [c.strip() for c in table[2].split("|")[1:-1]]
    # time 12,345 ns; DRAM 21.1 MB read + 1.5 Mbyte written; 1e6 sectors of 32 B from L2
    assert conv[3:8] == ["12.3", "22.6", "80.5", "60.2", "70.1"]
    assert conv[8:12] == ["32.0", "35.5 / 37.5", "168", "0.000"]
    assert conv[12] == "long_scoreboard 2.5, wait 1.2, barrier 0.3"
    assert conv[13] == "21.1 / 68.7"
    fwd = [c.strip() for c in table[3].split("|")[1:-1]]
    assert fwd[11] == "0.002"  # 256 B loaded + 1.5 KB stored from local memory
    assert fwd[12] == "n/a" and fwd[13] == ""
