"""OpenVINO latency of the students (fp32 and int8 IR) beside the MobileFaceNet peer, in one run.

    python benchmarks/edge_latency.py [--pretrained] [--calib ../shared/data/utkface]
        [--out benchmarks/results/edge_latency] [--work runs/edge_latency]

Batch 1, 1 thread, PERFORMANCE_HINT=LATENCY, as the issue measures. Every IR is timed under two
CPU-plugin settings: INFERENCE_PRECISION_HINT=f32 (what `lafs_edge.runtime.openvino` asks for)
and the plugin's default (bf16 on CPUs with AVX512-BF16/AMX: an "fp32" IR then runs in bf16).
The precision each compiled model actually executes in is read from its runtime graph.

Timing: the variants take turns (`--rounds` rounds of `--runs` calls each, so a disturbance of the
machine hits all of them), and each figure is the median over rounds of the per-round median.
Ratios are to the peer's fp32 IR in the same run, under the same setting.

Per-layer profiling (PERF_COUNT) says where the time goes: the part fViT patch sampler's share
(nodes under `__module.sampler`), the layers per executed precision (int8 / f32 / bf16) and the
layout and quantisation glue (Reorder, FakeQuantize, Convert) that an int8 graph pays.

The peer (`../shared/models/latency-reference/mobilefacenet.onnx`) is used for speed only.
Students: random weights (seed 0) unless --pretrained, which exports the shipped weights
(`lafs_edge.create_model(name, pretrained=True)`); int8 calibration uses --calib faces.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "models" / "latency-reference" / "mobilefacenet.onnx"
STUDENTS = ("mobilefacenet", "part_fvit_tiny")
SETTINGS = {"f32": {"INFERENCE_PRECISION_HINT": "f32"}, "default": {}}
GLUE = ("Reorder", "FakeQuantize", "Convert")


def export_students(names, pretrained: bool, calib: str, calib_count: int, work: Path,
                    reuse: bool) -> dict[str, dict[str, Path]]:
    """{student: {"fp32": model.xml, "int8": model.xml}} (exported with `lafs-edge export`'s
    pipeline, so these are the artifacts users get)."""
    from lafs_edge.convert.pipeline import export_models

    found: dict[str, dict[str, Path]] = {}
    for name in names:
        source = name
        if pretrained:
            from lafs_edge.models.pretrained import weights_file

            source = str(weights_file(name))
        found[name] = {"source": source}
        for precision in ("fp32", "int8"):
            folder = work / f"{name}-openvino-{precision}"
            if not (reuse and (folder / "model.xml").is_file()):
                start = time.perf_counter()
                export_models(source, ["openvino"], precision, work,
                              calib=calib if precision == "int8" else None,
                              calib_count=calib_count, random_init=not pretrained)
                print(f"exported {folder.name} in {time.perf_counter() - start:.0f} s",
                      file=sys.stderr, flush=True)
            found[name][precision] = folder / "model.xml"
    return found


def previous_sampler_ir(source: Path, work: Path) -> Path:
    """The fp32 IR of the same part fViT with the sampler's previous export form (matmul blend),
    for the sampler-share comparison."""
    import openvino as ov

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from previous_sampler import previous_gather

    from lafs_edge.convert.export import ExportModel, fuse_batchnorm
    from lafs_edge.convert.openvino import quiet, to_openvino
    from lafs_edge.models import sampler

    path = work / "part_fvit_tiny-previous-sampler" / "model.xml"
    model = _source_model(source)
    current = sampler._sample_gather
    sampler._sample_gather = previous_gather
    try:
        with quiet():
            ov_model = to_openvino(ExportModel(fuse_batchnorm(model)), model.image_size)
    finally:
        sampler._sample_gather = current
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(path))
    return path


def _source_model(source: str):
    from lafs_edge.convert.export import load_source
    from lafs_edge.models import list_models

    return load_source(source, random_init=source in list_models())[0]


def compile_variant(core, path: Path, setting: str, threads: int, profile: bool = False):
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads,
              **SETTINGS[setting]}
    if profile:
        config["PERF_COUNT"] = True
    return core.compile_model(core.read_model(str(path)), "CPU", config)


def executed_precisions(compiled) -> str:
    from lafs_edge.convert.bench import _openvino_precisions, summarize_precisions

    return summarize_precisions(_openvino_precisions(compiled))


def time_variants(requests: dict, x: np.ndarray, runs: int, rounds: int) -> dict[str, dict]:
    for request in requests.values():
        for _ in range(max(10, runs // 10)):
            request.infer({0: x})
    per_round: dict[str, list[float]] = {k: [] for k in requests}
    best: dict[str, float] = {k: float("inf") for k in requests}
    for _ in range(rounds):
        for key, request in requests.items():
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                request.infer({0: x})
                samples.append((time.perf_counter() - start) * 1e3)
            per_round[key].append(statistics.median(samples))
            best[key] = min(best[key], min(samples))
    return {k: {"median_ms": statistics.median(v), "round_medians_ms": v, "min_ms": best[k]}
            for k, v in per_round.items()}


def layer_profile(compiled, x: np.ndarray, runs: int = 50) -> dict:
    """Per-layer time, averaged over `runs` calls: by group of the model, by layer type and
    executed kernel, and by executed precision."""
    request = compiled.create_infer_request()
    for _ in range(10):
        request.infer({0: x})
    by_group, by_kernel, by_precision = defaultdict(float), defaultdict(float), defaultdict(float)
    glue_count: dict[str, int] = defaultdict(int)
    for i in range(runs):
        request.infer({0: x})
        for p in request.profiling_info:
            us = p.real_time.total_seconds() * 1e6 / runs
            by_group[_group(p.node_name)] += us
            by_kernel[f"{p.node_type} ({p.exec_type})"] += us
            if us > 0:
                by_precision[_precision_of(p.exec_type)] += us
            if i == 0 and p.node_type in GLUE and p.exec_type != "undef":
                glue_count[p.node_type] += 1
    total = sum(by_kernel.values())
    return {"total_us": total, "groups_us": dict(by_group), "kernels_us": dict(by_kernel),
            "precision_us": dict(by_precision), "glue_nodes_executed": dict(glue_count)}


def _group(node: str) -> str:
    """OpenVINO node name (TorchScript frontend: `__module.model.blocks.3.attn/aten::linear/...`)
    -> a coarse part of the model."""
    head = node.split("/")[0]
    if head.startswith("__module.sampler"):
        return "patch sampler"
    if head.startswith("__module.model.landmarks"):
        return "landmark CNN"
    if head.startswith("__module.model.blocks"):
        return "transformer blocks"
    if head.startswith("__module.model.patch_embed"):
        return "patch embedding"
    if head.startswith("__module.model.features") or head.startswith("__module.model.gdc") \
            or head.startswith("__module.model.embed"):
        return "CNN"
    return "other"


def _precision_of(exec_type: str) -> str:
    low = exec_type.lower()
    for tag, name in (("i8", "int8"), ("u8", "int8"), ("bf16", "bf16"), ("f16", "f16"),
                      ("f32", "f32")):
        if low.endswith(tag) or f"_{tag}" in low:
            return name
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(STUDENTS), choices=STUDENTS)
    parser.add_argument("--pretrained", action="store_true", help="export the shipped weights")
    parser.add_argument("--calib", default=str(ROOT.parent / "shared" / "data" / "utkface"),
                        help="int8 calibration faces (not an evaluation set)")
    parser.add_argument("--calib-count", type=int, default=128)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "edge_latency",
                        help="where the exported IRs go")
    parser.add_argument("--reuse", action="store_true", help="reuse IRs already in --work")
    parser.add_argument("--runs", type=int, default=100, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--peer", type=Path, default=PEER)
    parser.add_argument("--out", default=None, help="write OUT.md and OUT.json")
    args = parser.parse_args()

    import openvino as ov

    from lafs_edge.convert.bench import machine

    irs = export_students(args.models, args.pretrained, args.calib, args.calib_count, args.work,
                          args.reuse)
    if not args.peer.is_file():
        raise SystemExit(f"peer model not found: {args.peer}")
    core = ov.Core()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    paths = {("peer", "fp32"): args.peer}
    for name, by_precision in irs.items():
        for precision in ("fp32", "int8"):
            paths[(name, precision)] = by_precision[precision]
    compiled, requests, rows = {}, {}, []
    for (model, precision), path in paths.items():
        for setting in SETTINGS:
            key = f"{model} {precision} @{setting}"
            compiled[key] = compile_variant(core, path, setting, args.threads)
            requests[key] = compiled[key].create_infer_request()
    timing = time_variants(requests, x, args.runs, args.rounds)
    for (model, precision), path in paths.items():
        for setting in SETTINGS:
            key = f"{model} {precision} @{setting}"
            peer = timing[f"peer fp32 @{setting}"]["median_ms"]
            peer_f32 = timing["peer fp32 @f32"]["median_ms"]
            rows.append({"model": model, "ir": precision, "setting": setting,
                         "executes_in": executed_precisions(compiled[key]),
                         **{k: v for k, v in timing[key].items()},
                         "vs_peer_same_setting": timing[key]["median_ms"] / peer,
                         "vs_peer_fp32_f32": timing[key]["median_ms"] / peer_f32})
    profiles = {}
    for (model, precision), path in paths.items():
        for setting in SETTINGS:
            profiles[f"{model} {precision} @{setting}"] = layer_profile(
                compile_variant(core, path, setting, args.threads, profile=True), x)
    if "part_fvit_tiny" in irs:  # the sampler's share before and after, same weights
        previous = previous_sampler_ir(irs["part_fvit_tiny"]["source"], args.work)
        for setting in SETTINGS:
            profiles[f"part_fvit_tiny fp32, previous sampler @{setting}"] = layer_profile(
                compile_variant(core, previous, setting, args.threads, profile=True), x)
    graphs = {}
    for (model, precision), path in paths.items():
        counts: dict[str, int] = defaultdict(int)
        for op in core.read_model(str(path)).get_ops():
            if op.get_type_name() not in ("Constant", "Parameter", "Result"):
                counts[op.get_type_name()] += 1
        graphs[f"{model} {precision}"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    slopes = {}
    if "mobilefacenet" in irs:  # is PReLU really needed, or could it export as ReLU?
        import torch

        values = torch.cat([m.weight.detach().flatten()
                            for m in _source_model(irs["mobilefacenet"]["source"]).modules()
                            if isinstance(m, torch.nn.PReLU)])
        slopes = {"count": values.numel(), "min": float(values.min()), "max": float(values.max()),
                  "near_zero": int((values.abs() < 1e-3).sum())}
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "openvino": ov.__version__, "threads": args.threads,
              "batch": 1, "runs": args.runs, "rounds": args.rounds, "pretrained": args.pretrained,
              "rows": rows, "profiles": profiles, "graph_ops": graphs,
              "mobilefacenet_prelu_slopes": slopes}
    text = markdown(result)
    print(text, end="")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.md").write_text(text)
        Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def markdown(result: dict) -> str:
    lines = [f"OpenVINO {result['openvino']}, {result['machine']}, batch {result['batch']}, "
             f"{result['threads']} thread(s), LATENCY hint; median of {result['rounds']} "
             f"per-round medians of {result['runs']} calls; students "
             f"{'shipped weights' if result['pretrained'] else 'random weights (seed 0)'}.", "",
             "| model | IR | plugin setting | executes in | median ms | min ms | / peer fp32 (same setting) "
             "| / peer fp32 @f32 |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['ir']} | {r['setting']} | {r['executes_in']} | "
                     f"{r['median_ms']:.3f} | {r['min_ms']:.3f} | {r['vs_peer_same_setting']:.2f} | "
                     f"{r['vs_peer_fp32_f32']:.2f} |")
    lines += ["", "Per-layer profile (PERF_COUNT, microseconds per call; profiling adds overhead, "
              "so compare shares, not totals):", "",
              "| variant | total us | patch sampler | landmark CNN | blocks | CNN | int8 / f32 / bf16 us "
              "| glue nodes executed (us) |", "|---|---|---|---|---|---|---|---|"]
    for key, p in result["profiles"].items():
        g, total = p["groups_us"], p["total_us"] or 1.0
        share = lambda name: (f"{g.get(name, 0):.0f} ({100 * g.get(name, 0) / total:.1f}%)"
                              if g.get(name) else "-")
        prec = p["precision_us"]
        glue_us = sum(v for k, v in p["kernels_us"].items() if k.split(" ")[0] in GLUE)
        glue = ", ".join(f"{k} {n}" for k, n in sorted(p["glue_nodes_executed"].items())) or "none"
        lines.append(f"| {key} | {total:.0f} | {share('patch sampler')} | {share('landmark CNN')} | "
                     f"{share('transformer blocks')} | {share('CNN')} | "
                     f"{prec.get('int8', 0):.0f} / {prec.get('f32', 0):.0f} / {prec.get('bf16', 0):.0f} | "
                     f"{glue} ({glue_us:.0f}) |")
    lines += ["", "Ops in each IR as read (before the CPU plugin fuses them):", ""]
    for key, counts in result.get("graph_ops", {}).items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
