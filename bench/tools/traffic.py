"""Bytes per forward kernel: what each must move (each tensor it touches once) against what its
loads request from L2, derived from the tile sizes the launchers pick. ``python -m bench.tools.traffic``
prints the table for the headline case (the README's), with the op's roofline floor.

Requested bytes count every L2 request of whole tiles: a tile's halo (a 3x3 or K x K window
reaches past the tile), the folded weights streamed once per program, and the logits read
once per channel split of the reassembly. Requests served by L1 (the 9 or K*K shifted loads
of one tile) are not counted; the docstrings of the kernels state them.
"""
from __future__ import annotations

import argparse

import torch

from fade_triton.ops import reassemble
from fade_triton.ops.conv3x3 import conv3x3_config
from fade_triton.ops.fade.fold import padded_channels
from fade_triton.ops.helpers import Target, cdiv

from ..cases import HEADLINE, Case
from ..roofline import ITEMSIZE, min_bytes

SECTOR = 32  # bytes: the gate logit is one fp32 of each pixel's KP-channel row of lo, one sector per request


def _halo(rows: int, cols: int, reach: int) -> float:
    return (rows + 2 * reach) * (cols + 2 * reach) / (rows * cols)


def forward_traffic(case: Case, layout: str = "nchw") -> list[dict]:
    """Rows (kernel, minimum bytes, requested bytes, what the difference is) for FADE's forward."""
    b, c, s, k = case.batch, case.channels, case.scale, case.kernel
    h = w = case.size
    k2, kp, e = k * k, padded_channels(k * k), ITEMSIZE[case.dtype]
    q, p = b * h * w, b * h * w * s * s  # low- and high-resolution pixels
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(1, c, 2, 2, dtype=getattr(torch, case.dtype), device="meta").to(memory_format=fmt)
    weights = 9 * c * kp * e
    rows = []
    target = Target(90)  # the launchers' own tile choices for an sm_90 GPU
    for name, pixels, width, out_bytes, extra in (("semi_shift_lo (de -> lo, gate)", q, w, q * kp * 4, 0),
                                                  ("semi_shift_hi (en -> logits)", p, w * s, p * k2 * 4, q * kp * 4)):
        conv = conv3x3_config(x[..., :1, :1].expand(1, c, 2, width), kp, target)  # the launcher's tiles at this width
        tile_rows, tile_cols = conv["BLOCK_P"] // conv["TX"], conv["TX"]
        if conv["FOLD_X"]:  # whole rows: the 3 tap rows of each tile row, no column halo
            halo, what = (tile_rows + 2) / tile_rows, f"tap rows x{(tile_rows + 2) / tile_rows:.2f}"
        else:
            halo = _halo(tile_rows, tile_cols, 1)
            what = f"input halo x{halo:.2f}"
        programs = b * cdiv(pixels // (b * width), tile_rows) * cdiv(width, tile_cols)
        rows.append(dict(kernel=name, minimum=pixels * c * e + weights + out_bytes + extra,
                         requested=pixels * c * e * halo + weights * programs + out_bytes
                         + (p * k2 * 4 if extra else 0),
                         note=f"{what}; weights once per {conv['BLOCK_P']}-pixel program"
                              + ("; lo read per output pixel" if extra else "")))
    reassembly = dict(kernel="reassemble_fwd (softmax, reassembly, gate)", minimum=2 * p * c * e + q * c * e
                      + p * k2 * 4 + q * 4)
    # the launcher's own choice, on a GPU where float32 runs in TF32 (PyTorch's default)
    if reassemble.dot_kernel_applies(x, k, s, "tf32"):
        dot = reassemble.dot_tile(x, k, s)
        programs = b * cdiv(h * s, dot["DY"]) * cdiv(w * s, dot["TXO"])
        reassembly.update(requested=2 * p * c * e + programs * c * k * dot["Q"] * e + p * k2 * 4 + q * SECTOR,
                          note=f"de: {k} slabs of {dot['Q']} columns per {dot['DY']} x {dot['TXO']} output pixels "
                               f"(x{programs * k * dot['Q'] / q:.2f} of de, "
                               "neighbouring programs' rows from L2); logits and gate read once")
    else:
        tile = reassemble.tile_config(x, c, k, s, target)
        splits, _ = reassemble.channel_splits(c, tile["BLOCK_C"])
        de_halo = _halo(tile["TQ"] // tile["TX"], tile["TX"], k // 2)
        reassembly.update(requested=2 * p * c * e + q * c * e * de_halo + (p * k2 * 4 + q * SECTOR) * splits,
                          note=f"de halo x{de_halo:.2f} ({k2} L1 requests per de element); logits and gate "
                               f"read by each of {splits} channel splits")
    rows.append(reassembly)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.tools.traffic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(ITEMSIZE))
    parser.add_argument("--layout", default="nchw", choices=["nchw", "channels_last"])
    args = parser.parse_args(argv)
    case = Case(op="fade", dtype=args.dtype, **HEADLINE)
    rows = forward_traffic(case, args.layout)
    floor = min_bytes(case)
    print(f"FADE forward, B={case.batch} C={case.channels} {case.size}^2 -> {case.size * case.scale}^2 "
          f"K={case.kernel} {args.dtype} {args.layout}; MB = 1e6 bytes")
    print(f"{'kernel':44s} {'minimum MB':>11s} {'requested MB':>13s}  what the difference is")
    for r in rows:
        print(f"{r['kernel']:44s} {r['minimum'] / 1e6:11.1f} {r['requested'] / 1e6:13.1f}  {r['note']}")
    total = sum(r["minimum"] for r in rows)
    print(f"{'sum of the kernels':44s} {total / 1e6:11.1f} {sum(r['requested'] for r in rows) / 1e6:13.1f}")
    print(f"{'roofline floor (en, de read once, out written once)':44s} {floor / 1e6:11.1f}"
          f"   -> the kernels' minimum is {total / floor:.2f}x the floor")


if __name__ == "__main__":
    main()
