"""`lafs-edge export MODEL [--random-init] [model.overrides.KEY=VALUE ...] --target
openvino|coreml|tflite|onnx|pytorch|all --precision fp32|fp16|int8 --calib DIR --out DIR`: one
artifact folder per target, `OUT/<name>-<target>-<precision>/`. Architecture overrides are
spelled as in a training config (`model.overrides.depth=1`, `'model.overrides={depth: 1}'`) and
read by the same parser."""
from __future__ import annotations

import argparse

from lafs_edge.errors import UserError
from lafs_edge.commands.gallery_common import number

TARGET_CHOICES = ("onnx", "openvino", "tflite", "coreml", "pytorch", "all")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="lafs-edge checkpoint, or a model name: its shipped weights "
                                      "(`lafs-edge models`), or random ones with --random-init")
    parser.add_argument("--random-init", action="store_true",
                        help="export the named architecture with random weights (seed 0; "
                             "model.overrides allowed): for tests and size or latency checks, "
                             "never for recognition")
    parser.add_argument("overrides", nargs="*", metavar="model.overrides.KEY=VALUE",
                        help="model config overrides as training spells them, values parsed as "
                             "YAML: model.overrides.depth=1, model.overrides.preset=test or "
                             "'model.overrides={depth: 1, dim: 64}' (registry models)")
    parser.add_argument("--target", required=True, metavar="|".join(TARGET_CHOICES),
                        help="one target, several joined by commas (openvino,tflite), or all = "
                        "onnx, openvino, tflite and coreml (those exporting --precision)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                        help="fp32 (default), fp16 or int8 (needs --calib). Which one is fastest "
                        "depends on the CPU: OpenVINO runs float layers in bf16 on CPUs with "
                        "AVX512-BF16/AMX unless asked for f32 (lafs-edge's runtime asks for f32), "
                        "and int8 keeps some layers float; docs/benchmarks.md has the measurement "
                        "per student, and each export prints what its runtime executes in")
    parser.add_argument("--calib", help="aligned faces for int8 calibration (a folder with "
                        "landmarks.txt is aligned first); required for int8")
    parser.add_argument("--calib-count", type=number(1, 1e7, integer=True), default=128, help="calibration faces used")
    parser.add_argument("--pairs", help="labelled faces (identity folders or NAME.condition files) "
                        "for the FAR 1e-3 threshold and the parity figures; default: --calib if labelled")
    parser.add_argument("--pairs-count", type=number(2, 1e9, integer=True), help="use at most this many --pairs faces")
    parser.add_argument("--out", default="artifacts", help="parent folder of the artifact folders")
    parser.add_argument("--name", help="artifact name (default: the model's architecture)")
    parser.add_argument("--sampler", choices=("gather", "grid_sample"),
                        help="part fViT patch sampler to export "
                             "(default: gather, portable to every target)")
    parser.add_argument("--override", action=RenamedOverride, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from lafs_edge.convert.export import ALL_TARGETS, SUPPORTED, check_request
    from lafs_edge.convert.pipeline import export_models

    if args.target == "all":
        targets = [t for t in ALL_TARGETS if args.precision in SUPPORTED[t]]
    else:
        targets = list(dict.fromkeys(t.strip() for t in args.target.split(",")))
    for target in targets:
        check_request(target, args.precision)
    if args.precision == "int8" and not args.calib:
        raise UserError("int8 needs calibration faces: pass --calib DIR")
    if args.calib_count < 1:
        raise UserError("--calib-count must be at least 1")
    results = export_models(args.model, targets, args.precision, args.out, calib=args.calib,
                            calib_count=args.calib_count, pairs=args.pairs,
                            pairs_count=args.pairs_count, name=args.name,
                            sampler=args.sampler, overrides=parse_overrides(args.overrides),
                            random_init=args.random_init)
    for folder, manifest in results:
        parity = manifest.parity
        figure = ""
        if "mean_cosine" in parity:
            figure = f" cosine mean {parity['mean_cosine']:.5f} min {parity['min_cosine']:.5f}"
        elif "numeric" in parity:
            figure = " (program checked; numeric parity needs macOS)"
        threshold = f" threshold {manifest.threshold:.4f}" if manifest.threshold is not None else ""
        print(f"wrote {folder}{figure}{threshold}{executes_in(folder, manifest)}")
    return 0


def executes_in(folder, manifest) -> str:
    """", executes in int8 48/50 + f32 2/50": what the runtime will compute in, read from the
    loaded runtime (OpenVINO and LiteRT; other targets run as their precision says)."""
    if manifest.target not in ("openvino", "tflite"):
        return ""
    from lafs_edge.convert.bench import execution_precision
    from lafs_edge.runtime.backends import open_runtime

    from lafs_edge.convert import native_noise_filtered

    try:
        with native_noise_filtered():
            return f", executes in {execution_precision(open_runtime(folder, threads=1))}"
    except Exception as error:  # a report line must never fail an export that succeeded
        return f", executes in: unknown ({type(error).__name__})"


def parse_overrides(items: list[str]) -> dict:
    """`model.overrides.KEY=VALUE` (or `model.overrides={...}`) items -> {KEY: value}, read by
    the training config's parser, so both commands take the same text the same way."""
    from lafs_edge.train.config import nest, parse_override

    overrides: dict = {}
    for item in items:
        key, value = parse_override(item)
        if key == "model.overrides" and isinstance(value, dict):
            overrides.update(value)
        elif key.startswith("model.overrides."):
            overrides.update(nest(key.removeprefix("model.overrides."), value))
        else:
            raise UserError(f"export takes model.overrides.KEY=VALUE or 'model.overrides={{KEY: "
                            f"VALUE, ...}}' (the model's constructor arguments), got {item!r}")
    return overrides


class RenamedOverride(argparse.Action):
    """The old `--override KEY=VALUE`: one line saying how it is written now."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"--override is spelled as in training now: model.overrides.{values}")
