"""OpenVINO int8 latency of candidate `part_fvit_tiny` shapes against the latency reference, in one
run (issue 21: the landmark student's shape is chosen for latency <= 1.5x the reference before its
long run).

    python benchmarks/vit_shapes.py [--out benchmarks/results/vit_shapes]

Each shape is `part_fvit_tiny` with model overrides (random weights: latency does not depend on
them), exported by `lafs-edge export`'s pipeline to an int8 OpenVINO IR (calibration: 128 utkface
faces) and timed as benchmarks/edge_latency.py times the students: batch 1, 1 thread,
INFERENCE_PRECISION_HINT=f32, the variants taking turns over `--rounds` rounds of `--runs` calls,
each figure the median of the round medians, the ratio to the reference (the MobileFaceNet ONNX
of ../shared/models/latency-reference, fp32) in the same run, under both CPU-plugin settings of
edge_latency.py: INFERENCE_PRECISION_HINT=f32, and the plugin's default (bf16 for float layers on
CPUs with AMX, the reference's included), where the part fViT compares worst.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge_latency import PEER, compile_variant, time_variants  # noqa: E402

SHAPES = {
    "shipped (100 lm, w192, d6)": {"pool": "landmarks"},
    "64 lm, w192, d6": {"pool": "landmarks", "num_landmarks": 64},
    "100 lm, w192, d4": {"pool": "landmarks", "depth": 4},
    "100 lm, w160, d6": {"pool": "landmarks", "dim": 160, "mlp_dim": 640, "heads": 2,
                         "head_dim": 80},
    "64 lm, w192, d5": {"pool": "landmarks", "num_landmarks": 64, "depth": 5},
    "49 lm, w192, d6": {"pool": "landmarks", "num_landmarks": 49},
}


def export_shape(name: str, overrides: dict, work: Path, calib: str) -> Path:
    import torch

    from lafs_edge.convert.pipeline import export_models
    from lafs_edge.models import create_model, save_checkpoint

    slug = "".join(c if c.isalnum() else "_" for c in name)
    folder = work / slug
    xml = folder / "part_fvit_tiny-openvino-int8" / "model.xml"
    if xml.is_file():
        return xml
    torch.manual_seed(0)
    checkpoint = folder / "model.pt"
    save_checkpoint(create_model("part_fvit_tiny", **overrides), checkpoint)
    export_models(str(checkpoint), ["openvino"], "int8", folder, calib=calib, calib_count=128)
    found = sorted(folder.glob("*-openvino-int8/model.xml"))
    if not found:
        raise SystemExit(f"no int8 IR written under {folder}")
    return found[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "vit_shapes")
    parser.add_argument("--calib", default=str(ROOT.parent / "shared" / "data" / "utkface"))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()

    import openvino as ov

    from lafs_edge.convert.bench import machine
    from lafs_edge.models import create_model

    paths = {name: export_shape(name, o, args.work, args.calib) for name, o in SHAPES.items()}
    core = ov.Core()
    requests = {}
    for setting in ("f32", "default"):
        requests[("reference", setting)] = compile_variant(core, PEER, setting, 1).create_infer_request()
        for name, path in paths.items():
            requests[(name, setting)] = compile_variant(core, path, setting, 1).create_infer_request()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    timing = time_variants(requests, x, args.runs, args.rounds)
    ms = {key: t["median_ms"] for key, t in timing.items()}
    rows = [{"shape": name, "overrides": SHAPES[name],
             "params_m": round(sum(p.numel() for p in create_model(
                 "part_fvit_tiny", **SHAPES[name]).parameters()) / 1e6, 2),
             **{f"int8_ms_{s}": round(ms[(name, s)], 3) for s in ("f32", "default")},
             **{f"vs_reference_{s}": round(ms[(name, s)] / ms[("reference", s)], 2)
                for s in ("f32", "default")}} for name in SHAPES]
    result = {"machine": machine(), "openvino": ov.__version__,
              "reference_ms": {s: round(ms[("reference", s)], 3) for s in ("f32", "default")},
              "runs": args.runs, "rounds": args.rounds, "rows": rows}
    lines = [f"Reference (latency-reference MobileFaceNet ONNX, fp32): {ms[('reference', 'f32')]:.2f} "
             f"ms with the f32 hint, {ms[('reference', 'default')]:.2f} ms with the plugin's default. "
             f"{machine()}, OpenVINO {ov.__version__}, batch 1, 1 thread.", "",
             "| part_fvit_tiny shape | params (M) | int8 ms (f32 hint) | x reference | int8 ms "
             "(default) | x reference |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['params_m']} | {r['int8_ms_f32']:.2f} | "
              f"{r['vs_reference_f32']:.2f} | {r['int8_ms_default']:.2f} | "
              f"{r['vs_reference_default']:.2f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
