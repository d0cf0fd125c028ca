"""Published numbers the benchmark sets beside its own measurements: what each upsampler buys
(SegFormer-B1 on ADE20K, mIoU) and what the DySample paper's Figure 1 reports it costs.

Nothing here is measured by this project. Latencies are read off the DySample paper's Figure 1
plot (x2 upsampling of a 256 x 120 x 120 feature; the GPU is not stated there), so they are
approximate; mIoU ranges span the values the sources report (DySample's variants; FADE as
reported by its own paper and by the DySample paper).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DYSAMPLE = 'Liu, Lu, Fu, Cao, "Learning to Upsample by Learning to Sample", ICCV 2023'
FADE = 'Lu, Liu, Fu, Cao, "FADE", ECCV 2022 / IJCV 2024'
CARAFE = 'Wang, Chen, Xu, Liu, Loy, Lin, "CARAFE: Content-Aware ReAssembly of FEatures", ICCV 2019'
SAPA = 'Lu et al., "SAPA: Similarity-Aware Point Affiliation for Feature Upsampling", NeurIPS 2022'
FIGURE_1 = f"{DYSAMPLE}, Figure 1 (read off the plot; GPU not stated)"


@dataclass(frozen=True)
class Published:
    """One upsampler's published figures. ``miou``: SegFormer-B1, ADE20K, (low, high), None
    where not tabulated here; ``latency_ms``: DySample's Figure 1 case, (low, high)."""

    method: str
    providers: tuple  # the benchmark providers that compute this upsampler
    miou: tuple | None
    miou_source: str
    latency_ms: tuple
    latency_source: str = FIGURE_1


PUBLISHED = (
    Published("bilinear", ("bilinear",), (41.68, 41.68), DYSAMPLE, (1.6, 1.6)),
    Published("DySample", ("dysample", "dysample_dyscope"), (43.2, 43.6), f"{DYSAMPLE} (its variants)", (6.2, 7.6)),
    Published("CARAFE", ("carafepack", "carafepack_mmcv"), (42.82, 42.82), DYSAMPLE, (12.6, 12.6)),
    Published("FADE", ("triton", "torch", "naive", "naive_compiled", "mmcv"), (43.06, 44.41),
              f"{FADE}; {DYSAMPLE} (by source)", (23.0, 23.0)),
    Published("SAPA", (), None, f"{SAPA}: no mIoU tabulated here, not measured here", (28.0, 28.0)),
)


def for_provider(provider: str) -> Published | None:
    return next((p for p in PUBLISHED if provider in p.providers), None)


def write_csv(rows: list[dict], path: Path) -> Path:
    """The latency-vs-mIoU table: every timed forward row of an upsampler with a published mIoU
    (FADE's providers on the ``fade`` op), beside each method's published figures and sources."""
    fields = ["kind", "method", "provider", "dtype", "mode", "ms_median", "miou_low", "miou_high", "miou_source",
              "published_ms_low", "published_ms_high", "latency_source"]
    out = []
    for pub in PUBLISHED:
        miou = pub.miou or ("", "")
        out.append(dict(kind="published", method=pub.method, miou_low=miou[0], miou_high=miou[1],
                        miou_source=pub.miou_source, published_ms_low=pub.latency_ms[0],
                        published_ms_high=pub.latency_ms[1], latency_source=pub.latency_source))
    for r in measured_points(rows):
        pub = for_provider(r["provider"])
        out.append(dict(kind="measured here", method=pub.method, provider=r["provider"], dtype=r["dtype"],
                        mode=r["mode"], ms_median=r["ms_median"], miou_low=pub.miou[0], miou_high=pub.miou[1],
                        miou_source=pub.miou_source))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(out)
    return path


def measured_points(rows: list[dict]) -> list[dict]:
    """Timed rows of the ``fade`` op (FADE's providers, and the other upsamplers, which run on
    those cases) whose method has a published mIoU."""
    return [r for r in rows if r["status"] == "ok" and r["op"] == "fade" and (pub := for_provider(r["provider"]))
            and pub.miou]

