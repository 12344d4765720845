"""The edge students (issue 13): distil `part_fvit_tiny` (landmark read-out) and the CNN student
(`mobilefacenet`) from the external teacher (face-reidentification-retail-0095) on the unlabelled
pool (wild5 + utkface + aaf + CelebA train identities, ~47k faces), export them to ONNX,
OpenVINO, TFLite and Core ML (fp32, fp16, int8), verify every artifact against PyTorch, measure
accuracy on ORL, Yale and the CelebA eval identities next to the teacher's, and latency; with
`--ship`, put the weights, their sha256 and model cards into the package (lafs_edge/weights/).

    python experiments/edge_students.py --ship          # cpu preset (the shipped weights)
    python experiments/edge_students.py --preset gpu    # one GPU: on-line targets, 10 epochs
    python experiments/edge_students.py --skip-train    # re-export/evaluate existing students

Every stage is a `lafs-edge` command (printed before it runs, so anyone can rerun it alone);
finished stages are reused and an interrupted training resumes. Writes
docs/results/edge_students.{json,md} and its plots, then regenerates docs/results.md
(experiments/report.py).

Protocol: ORL and Yale are aligned by the device pipeline (MediaPipe -> 5 points -> 112x112
ArcFace crop, experiments/faces.py); the teacher gets its own crop of the same 5 points. No
image of ORL, Yale or the CelebA eval identities is used for training or int8 calibration
(calibration: 128 wild5 faces). The artifacts' manifest threshold is taken from Yale pairs and
the shipped weights' from CelebA eval pairs; no reported figure uses either.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faces import (  # noqa: E402
    REPO,
    RESULTS,
    RUNS,
    SHARED_DATA,
    aligned_faces,
    aligned_folder,
    celeba_eval_crops,
    celeba_eval_faces,
    embed_with,
    evaluate,
    face_points,
    torch_embedder,
    write_json,
)

TEACHER_YAML = "train/configs/teachers/retail_0095.yaml"
TEACHER_XML = SHARED_DATA.parent / "models" / "face-reidentification-retail-0095"
STUDENTS = ("part_fvit_tiny", "mobilefacenet")
WILD5 = SHARED_DATA / "wild5"
# The unlabelled pool: wild5 + utkface + aaf + the CelebA *train* identities (~47k faces), one
# 5-point list with paths relative to ../shared/data. As written in the commands (they run from
# the repository root); the target cache is keyed by these strings.
POOL_SOURCES = ("wild5", "utkface", "aaf", "celeba")
DATA_ARG, POOL_LIST = "../shared/data", "runs/pool/landmarks.txt"
TARGET_CACHE = "runs/teacher_targets_pool_retail0095.pt"
# Steps at batch 64. cpu: cached targets (the teacher embeds each face and its mirror once),
# bf16 autocast, the two students side by side with one thread each (each takes the whole run).
# The ViT reads out one linear map per landmark (`pool=landmarks`): with the paper's class
# token it does not leave the teacher's mean direction at this budget (docs/results.md).
PRESETS = {
    "cpu": {"batch": 64, "targets": "cached", "threads": 1, "precision": "bf16",
            "steps": {"part_fvit_tiny": 2400, "mobilefacenet": 1400},
            "lr": {"part_fvit_tiny": 1e-3, "mobilefacenet": 2e-3},
            "warmup_epochs": {"part_fvit_tiny": 0.1, "mobilefacenet": 0.1},
            "overrides": {"part_fvit_tiny": {"pool": "landmarks"}, "mobilefacenet": {}},
            "checkpoint_every": {"part_fvit_tiny": 200, "mobilefacenet": 200},
            # mobilefacenet (the default student): a second run warm-started from the first
            # (model.init) with a new, lower cosine schedule: the first ends with the loss still
            # falling (teacher cosine ~0.6).
            "continue": {"steps": {"mobilefacenet": 1300}, "lr": {"mobilefacenet": 1e-3},
                         "warmup_epochs": {"mobilefacenet": 0.02}}},
    # One GPU (bf16 autocast): online targets on posed, photometrically augmented views
    # (the teacher runs on the host CPU through OpenVINO), 10 epochs of the pool.
    "gpu": {"batch": 256, "targets": "online", "threads": 8, "precision": "auto",
            "steps": {"part_fvit_tiny": 1800, "mobilefacenet": 1800},
            "lr": {"part_fvit_tiny": 2e-3, "mobilefacenet": 4e-3},
            "warmup_epochs": {"part_fvit_tiny": 1.0, "mobilefacenet": 0.5},
            "overrides": {"part_fvit_tiny": {"pool": "landmarks"}, "mobilefacenet": {}},
            "checkpoint_every": {"part_fvit_tiny": 200, "mobilefacenet": 200}},
}
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("onnx", "openvino", "tflite", "coreml")   # onnx: fp32 only (int8/fp16 come from each
RUNNABLE = ("onnx", "openvino", "tflite")            # runtime's own tool); Core ML runs on macOS
ARTIFACTS = [(t, p) for p in PRECISIONS for t in TARGETS if t != "onnx" or p == "fp32"]


def run(argv: list[str], threads: int | None = None, check: bool = True) -> int:
    """Print and run a command from the repository root; a failure stops the script unless
    `check` is off (then the exit code is returned)."""
    print("$ " + shlex.join(argv), flush=True)
    env = None
    if threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    code = subprocess.run(argv, cwd=REPO, env=env).returncode
    if code and check:
        raise SystemExit(f"failed: {shlex.join(argv)} (its output is above)")
    return code


def pool_list(data: Path = SHARED_DATA) -> Path:
    """Write the pool's 5-point list (POOL_LIST): every face of POOL_SOURCES, CelebA limited to
    its train identities (its eval identities are a test set)."""
    train_ids = set((data / "celeba" / "splits" / "train_ids.txt").read_text().split())
    lines = []
    for source in POOL_SOURCES:
        for line in (data / source / "landmarks.txt").read_text().splitlines():
            if line.strip() and (source != "celeba" or line.split("/")[0] in train_ids):
                lines.append(f"{source}/{line}")
    path = REPO / POOL_LIST
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def stages(preset: dict, student: str) -> list[dict]:
    """A student's training runs, in order: the first, then its warm-started continuation."""
    more = preset.get("continue", {})
    return [preset] + ([{**preset, **more}] if student in more.get("steps", {}) else [])


def run_dir(out: Path, student: str, stage: int) -> Path:
    return out / (student if stage == 0 else f"{student}-continued")


def final_run(out: Path, student: str, preset: dict) -> Path:
    """The run whose model.pt is the preset's result."""
    return run_dir(out, student, len(stages(preset, student)) - 1)


def distill_argv(student: str, preset: dict, out: Path, stage: int = 0) -> list[str]:
    settings = stages(preset, student)[stage]
    overrides = settings["overrides"][student]
    init = [f"model.init={run_dir(out, student, stage - 1) / 'model.pt'}"] if stage else []
    return ["lafs-edge", "train", "distill", "--config", "distill",
            f"model.arch={student}", f"distill.teacher={TEACHER_YAML}",
            f"distill.targets={settings['targets']}", f"distill.target_cache={TARGET_CACHE}",
            "data.format=landmarks", f"data.root={DATA_ARG}", f"data.list_file={POOL_LIST}",
            "data.num_workers=0" if settings["targets"] == "cached" else "data.num_workers=6",
            f"optim.batch_size={settings['batch']}",
            f"optim.max_steps={settings['steps'][student]}",
            f"optim.lr={settings['lr'][student]}",
            f"optim.warmup_epochs={settings['warmup_epochs'][student]}",
            f"train.precision={settings['precision']}",
            f"train.checkpoint_every={settings['checkpoint_every'][student]}", "train.log_every=20",
            "train.progress=false", f"output_dir={run_dir(out, student, stage)}"] + init + \
        ([f"model.overrides={json.dumps(overrides, separators=(',', ':'))}"] if overrides else [])


def finished(run_dir: Path, steps: int) -> bool:
    metrics = run_dir / "metrics.jsonl"
    if not (run_dir / "model.pt").is_file() or not metrics.is_file():
        return False
    last = metrics.read_text().strip().splitlines()[-1]
    return json.loads(last)["step"] >= steps


def train_students(preset: dict, out: Path) -> None:
    """Both students side by side (`threads` each), stage after stage; an interrupted run
    resumes."""
    pool_list()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(preset["threads"])}
    for stage in range(max(len(stages(preset, s)) for s in STUDENTS)):
        pending = [s for s in STUDENTS if stage < len(stages(preset, s)) and
                   not finished(run_dir(out, s, stage), stages(preset, s)[stage]["steps"][s])]
        if pending and preset["targets"] == "cached" and not (REPO / TARGET_CACHE).is_file():
            # compute the shared targets once, first
            run(distill_argv(pending[0], preset, RUNS / "targets_probe") + ["optim.max_steps=1"], 2)
        jobs = []
        for student in pending:
            argv = distill_argv(student, preset, out, stage)
            print("$ " + shlex.join(argv), flush=True)
            log = open(out / f"{run_dir(out, student, stage).name}.log", "a")
            jobs.append((argv, subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=log)))
        for argv, job in jobs:
            if job.wait():
                raise SystemExit(f"failed: {shlex.join(argv)} (see {out}/*.log)")


def export_and_verify(out: Path, preset: dict, artifacts: Path) -> dict[str, dict]:
    """{artifact name: verify report + "passed"} for every student x target x precision; the
    students side by side (each chain of exports is mostly single-threaded)."""
    from concurrent.futures import ThreadPoolExecutor

    orl, yale = aligned_folder("orl"), aligned_folder("yale")  # before the threads: one writer
    with ThreadPoolExecutor(len(STUDENTS)) as pool:
        done = list(pool.map(lambda s: export_student(s, final_run(out, s, preset), artifacts,
                                                     orl, yale), STUDENTS))
    return {name: report for reports in done for name, report in reports.items()}


def export_student(student: str, trained: Path, artifacts: Path, orl: Path,
                   yale: Path) -> dict[str, dict]:
    for precision in PRECISIONS:
        if all((artifacts / f"{student}-{t}-{p}" / "manifest.json").is_file()
               for t, p in ARTIFACTS if p == precision):
            continue
        argv = ["lafs-edge", "export", str(trained / "model.pt"), "--target", "all",
                "--precision", precision, "--pairs", str(yale), "--out", str(artifacts),
                "--name", student]
        if precision == "int8":
            argv += ["--calib", str(WILD5), "--calib-count", "128"]
        run(argv)
    reports = {}
    for target, precision in ARTIFACTS:
        name = f"{student}-{target}-{precision}"
        report = artifacts / f"{name}.verify.json"
        if not report.is_file():
            code = run(["lafs-edge", "verify", str(artifacts / name), "--data", str(orl),
                        "--json", str(report)], check=False)  # a failed gate is a result too
            saved = json.loads(report.read_text())
            write_json(report, {**saved, "passed": code == 0})
        reports[name] = json.loads(report.read_text())
    return reports


def accuracy(out: Path, preset: dict, artifacts: Path) -> dict[str, dict]:
    """ORL, Yale and CelebA-eval figures of the teacher (FP16 and its INT8 IR), each student
    untrained and distilled in PyTorch, and each artifact in its runtime."""
    import torch

    from lafs_edge.image import read_image
    from lafs_edge.models import create_model, load_model
    from lafs_edge.runtime.embedder import Embedder, external_manifest
    from lafs_edge.runtime.manifest import write_manifest

    rows: dict[str, dict] = {}
    for data in ("orl", "yale", "celeba"):
        if data == "celeba":
            crops, labels = celeba_eval_crops()
            paths, points, _ = celeba_eval_faces()
        else:
            crops, labels = aligned_faces(data)
            paths, points = face_points(data)
        for precision in ("FP16", "FP16-INT8"):
            folder = RUNS / f"teacher-{precision}"
            write_manifest(external_manifest(TEACHER_XML / precision /
                                             "face-reidentification-retail-0095.xml"), folder)
            teacher = Embedder.from_artifact(folder)
            vectors = np.concatenate([teacher.embed(read_image(p), [pts])
                                      for p, pts in zip(paths, points)])
            rows.setdefault(f"teacher-{precision.lower()}", {})[data] = \
                evaluate(vectors, labels, (1, 3), roc=True)
        for student in STUDENTS:
            torch.manual_seed(0)  # the untrained reference: what distillation adds
            overrides = PRESETS["cpu"]["overrides"][student]
            for name, model in ((f"{student}-untrained", create_model(student, **overrides)),
                                (f"{student}-pytorch-fp32", load_model(final_run(out, student, preset) / "model.pt"))):
                rows.setdefault(name, {})[data] = evaluate(
                    embed_with(torch_embedder(model.eval()), crops), labels, (1, 3), roc=True)
            for target, precision in ARTIFACTS:
                if target not in RUNNABLE:
                    continue
                name = f"{student}-{target}-{precision}"
                embedder = Embedder.from_artifact(artifacts / name)
                rows.setdefault(name, {})[data] = \
                    evaluate(embed_with(embedder.embed_crops, crops), labels, (1, 3), roc=True)
            print(f"{data} {student}: rank-1 k=1 "
                  f"{rows[f'{student}-pytorch-fp32'][data]['rank1_k1']:.3f}", flush=True)
    return rows


def open_set_thresholds(out: Path, preset: dict) -> dict[str, float]:
    """Each student's shipped threshold: the cosine at FAR 1e-3 over all impostor pairs of the
    CelebA eval identities (PyTorch fp32)."""
    from lafs_edge.convert.manifest import threshold_at_far
    from lafs_edge.models import load_model

    crops, labels = celeba_eval_crops()
    return {s: round(threshold_at_far(embed_with(torch_embedder(load_model(
        final_run(out, s, preset) / "model.pt")), crops), labels, 1e-3), 4) for s in STUDENTS}


def demo_photo_cosines(artifacts: Path, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """The quickstart's photos through the device pipeline (MediaPipe, 5-point alignment):
    cosine of each cast pair and of the two pairs the teacher only matches at its threshold,
    and the highest cosine of any stranger to an enrolled face, for the teacher and each
    student's int8 artifacts, with the threshold the quickstart uses (the teacher's manifest,
    the students' shipped one)."""
    from lafs_edge.apps.group_photos import (CAST, ENROLLMENT_PHOTOS, HARD_PAIRS, PHOTOS,
                                             expected_names, fetch_photos)
    from lafs_edge.image import read_image
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.runtime.embedder import Embedder

    folder, analyzer = fetch_photos(), FaceAnalyzer()
    photos = {}
    for name in PHOTOS:
        image = read_image(folder / name)
        photos[name] = (image, sorted(analyzer.analyze(image), key=lambda f: f.box[0]))
    models = {"teacher-fp16": (RUNS / "teacher-FP16", None)}
    models.update({f"{s}-{t}-int8": (artifacts / f"{s}-{t}-int8", thresholds[s])
                   for s in STUDENTS for t in ("openvino", "tflite")})
    rows = {}
    for row, (folder_, threshold) in models.items():
        embedder = Embedder.from_artifact(folder_)
        vectors = {name: embedder.embed(image, [f.points5 for f in faces])
                   for name, (image, faces) in photos.items()}
        enrolled = {person: vectors[p][i] for person, ((p, i), _) in CAST.items()}
        pairs = {f"{person}: {other}": vectors[other][j] @ enrolled[person]
                 for person, (_, seen) in CAST.items() for other, j in seen}
        pairs.update({name: vectors[a][i] @ vectors[b][j]
                      for name, ((a, i), (b, j)) in HARD_PAIRS.items()})
        strangers = [vectors[p][j] @ v for p in PHOTOS if p not in ENROLLMENT_PHOTOS
                     for j, truth in enumerate(expected_names(p, len(vectors[p])))
                     if truth == "unknown" for v in enrolled.values()]
        rows[row] = {**{k: round(float(v), 3) for k, v in pairs.items()},
                     "top stranger": round(float(max(strangers)), 3),
                     "threshold": round(float(threshold or embedder.threshold), 3)}
    return rows


def demo_photo_table(cosines: dict[str, dict[str, float]]) -> list[str]:
    columns = list(next(iter(cosines.values())))
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {row} | " + " | ".join(f"{v:.3f}" for v in values.values()) + " |"
              for row, values in cosines.items()]
    return lines


def bench(artifacts: Path) -> dict:
    path = artifacts / "bench"
    if not path.with_suffix(".json").is_file():
        run(["lafs-edge", "bench", *[str(artifacts / f"{s}-{t}-{p}") for s in STUDENTS
                                    for t, p in ARTIFACTS if t in RUNNABLE],
             "--batch", "1", "8", "--threads", "1", "0", "--runs", "100", "--out", str(path)])
    return json.loads(path.with_suffix(".json").read_text())


def plots(rows: dict, latency: dict[str, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(RESULTS / name, dpi=90)
        plt.close(fig)
        names.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data in zip(axes, ("orl", "yale")):
        for name in ("teacher-fp16", "part_fvit_tiny-pytorch-fp32", "mobilefacenet-pytorch-fp32",
                     "part_fvit_tiny-openvino-int8", "mobilefacenet-openvino-int8"):
            roc = rows[name][data]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=name)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_xlabel("false accept rate")
        ax.set_ylabel("true accept rate")
        ax.set_title(f"{data.upper()} verification (all pairs of held-out images)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    save(fig, "edge_students_roc.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, data in zip(axes, ("orl", "yale")):
        for name in ("teacher-fp16", "part_fvit_tiny-pytorch-fp32", "mobilefacenet-pytorch-fp32"):
            ks = [1, 3]
            means = [rows[name][data][f"rank1_k{k}"] for k in ks]
            stds = [rows[name][data][f"rank1_k{k}_std"] for k in ks]
            ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=name)
        ax.set_xlabel("enrolled images per person (k)")
        ax.set_ylabel("rank-1 identification")
        ax.set_title(data.upper())
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    save(fig, "edge_students_shots.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ms in latency.items():
        ax.scatter(ms, rows[name]["orl"]["rank1_k1"], label=name)
    ax.set_xlabel("latency, batch 1, 1 thread (ms)")
    ax.set_ylabel("ORL rank-1, k=1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, "edge_students_latency.png")
    return names


def accuracy_table(rows: dict, bench_rows: list[dict]) -> list[str]:
    one_thread = {r["artifact"]: r for r in bench_rows if r["batch"] == 1 and r["threads"] == 1}
    lines = ["| model | runtime, precision | ORL rank-1 k=1 | k=3 | Yale rank-1 k=1 | k=3 "
             "| CelebA TAR@FAR1e-3 | TAR@FAR1e-2 | ms, batch 1, 1 thread | MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, figures in rows.items():
        o, y, c = figures["orl"], figures["yale"], figures["celeba"]
        b = one_thread.get(name)
        model, _, runtime = name.partition("-")
        lines.append(
            f"| {model} | {runtime} | {o['rank1_k1']:.3f} ({o['rank1_k1_std']:.3f}) "
            f"| {o['rank1_k3']:.3f} | {y['rank1_k1']:.3f} ({y['rank1_k1_std']:.3f}) "
            f"| {y['rank1_k3']:.3f} | {c['tar_at_far_1e-3']:.3f} | {c['tar_at_far_1e-2']:.3f} "
            + (f"| {b['median_ms']:.2f} | {b['size_mb']:.1f} |" if b else "| - | - |"))
    return lines


def parity_table(reports: dict) -> list[str]:
    lines = ["| artifact | mean cosine | min cosine | centred cosine | ORL accuracy (PyTorch) "
             "| verify |", "|---|---|---|---|---|---|"]
    for name, r in reports.items():
        verdict = "PASS" if r["passed"] else "FAIL"
        if "mean_cosine" not in r:  # Core ML off macOS: the program was checked, not run
            lines.append(f"| {name} | - | - | - | program checked on Linux | {verdict} |")
            continue
        lines.append(f"| {name} | {r['mean_cosine']:.6f} | {r['min_cosine']:.6f} "
                     f"| {r['centred_mean_cosine']:.4f} | {100 * r['accuracy']:.2f}% "
                     f"({100 * r['accuracy_pytorch']:.2f}%) | {verdict} |")
    return lines


def fragment(args, preset: dict, rows: dict, reports: dict, bench_rows: list[dict],
             images: list[str], out: Path, machine: str, seconds: dict[str, float],
             cosines: dict[str, dict[str, float]]) -> str:
    lines = [
        "## The edge students", "",
        "How the first students were trained and shipped (issue 13); what the package holds "
        "now is in the section above. "
        f"Produced by `python experiments/edge_students.py --preset {args.preset}` on {machine}. "
        "Teacher: face-reidentification-retail-0095 (OpenVINO IR, ../shared/models; its FP16 IR "
        "and the FP16-INT8 IR shipped beside it). Students distilled on the unlabelled pool "
        f"({sum(1 for _ in (REPO / POOL_LIST).open())} faces: wild5, utkface, aaf and the CelebA "
        "train identities, aligned by their 5 points) with a cosine loss through a linear "
        f"projection to the teacher's 256-d; {preset['targets']} targets, batch "
        f"{preset['batch']}, {preset['precision']} autocast, "
        + ", ".join(f"{s} {steps_text(s, preset)} ({training_minutes(out, s, preset):.0f} min)"
                    for s in STUDENTS) + ", side by side on one thread each. "
        "ORL/Yale aligned by MediaPipe (as on the device); k-shot rank-1 = mean (std) over 5 "
        "draws of the k enrolled images per person. CelebA: the 44 eval identities (never in the "
        "pool), aligned by their 5 points; TAR at FAR over all genuine pairs and as many impostor "
        "pairs. Nothing here was trained or calibrated on ORL, Yale or the CelebA eval identities "
        "(int8 calibration: 128 wild5 faces).", "",
        f"Wall time of that invocation: {sum(seconds.values()) / 60:.0f} min ("
        + ", ".join(f"{stage} {t / 60:.1f}" for stage, t in seconds.items())
        + " min; a stage whose outputs were already there is reused, not rerun).", "",
        "The distillation commands (what the script ran):", "", "```"]
    lines += [shlex.join(distill_argv(s, preset, out, stage))
              for s in STUDENTS for stage in range(len(stages(preset, s)))]
    lines += ["```", "", *accuracy_table(rows, bench_rows), "",
              *findings(rows, out, preset, bench_rows), "",
              "Latency: `lafs-edge bench`, median of 100 runs after warm-up; all settings "
              "(batch 8, all threads) and the parity of every artifact in "
              "[deploy.md](deploy.md#measured-here).", "",
              "### The quickstart's photos", "",
              "Cosines through the device pipeline (MediaPipe -> 5 points -> each model's crop) on "
              "the photos `make quickstart` uses (apps/group_photos.py): each enrolled person's "
              "enrollment face against their other appearances, the two people the teacher "
              "only matches at its threshold (strangers in the demo), and the highest cosine of "
              "any of the 19 strangers to an enrolled face. A face is named when its cosine "
              "reaches the model's threshold (last column).", "",
              *demo_photo_table(cosines), ""]
    lines += [f"![{img}](results/{img})" for img in images]
    return "\n".join(lines) + "\n"


def findings(rows: dict, out: Path, preset: dict, bench_rows: list[dict]) -> list[str]:
    """What the table says against the issue's targets, computed from it and the training logs."""
    one_thread = {r["artifact"]: r["median_ms"] for r in bench_rows
                  if r["batch"] == 1 and r["threads"] == 1}
    lines = []
    for student in STUDENTS:
        log = [json.loads(line) for line in
               (final_run(out, student, preset) / "metrics.jsonl").read_text().splitlines()]
        before, after = rows[f"{student}-untrained"], rows[f"{student}-pytorch-fp32"]
        int8 = {t: rows[f"{student}-{t}-int8"] for t in ("openvino", "tflite")}
        meets = all(r["orl"]["rank1_k1"] >= 0.95 and r["yale"]["rank1_k1"] >= 0.90
                    for r in int8.values())
        lines.append(
            f"- **{student}**: ORL rank-1 (k=1) {before['orl']['rank1_k1']:.3f} untrained -> "
            f"{after['orl']['rank1_k1']:.3f} distilled, Yale {before['yale']['rank1_k1']:.3f} -> "
            f"{after['yale']['rank1_k1']:.3f}, CelebA TAR@FAR1e-3 "
            f"{before['celeba']['tar_at_far_1e-3']:.3f} -> {after['celeba']['tar_at_far_1e-3']:.3f}; "
            f"teacher cosine on the last training batches {np.mean([r['teacher_cosine'] for r in log[-5:]]):.2f}. "
            f"int8: ORL {int8['openvino']['orl']['rank1_k1']:.3f} (OpenVINO) / "
            f"{int8['tflite']['orl']['rank1_k1']:.3f} (LiteRT), Yale "
            f"{int8['openvino']['yale']['rank1_k1']:.3f} / {int8['tflite']['yale']['rank1_k1']:.3f}. "
            f"Target (int8 ORL k=1 >= 0.95, Yale k=1 >= 0.90): {'met' if meets else 'not met'}.")
    vit, cnn = "part_fvit_tiny-openvino-int8", "mobilefacenet-openvino-int8"
    ratio = one_thread[vit] / one_thread[cnn] if vit in one_thread and cnn in one_thread else None
    better = [d for d in ("orl", "yale", "celeba") for key in
              (("rank1_k1",) if d != "celeba" else ("tar_at_far_1e-3",))
              if rows[vit][d][key] >= rows[cnn][d][key]]
    lines.append(
        f"- part_fvit_tiny against mobilefacenet (OpenVINO int8): at least as accurate on "
        f"{len(better)} of 3 sets ({', '.join(better) or 'none'}); latency ratio "
        + (f"{ratio:.2f}x (target <= 1.5x)." if ratio else "not measured."))
    return lines


TERMS = ("Trained on research face datasets: UTKFace and CelebA are for **non-commercial research "
         "only**, All-Age-Faces and wild5 (LFW / web photos) for research use. These weights are "
         "therefore for non-commercial research use only; the code is Apache-2.0. The teacher, "
         "Intel's face-reidentification-retail-0095, is Apache-2.0.")


THRESHOLD_SOURCE = ("cosine at FAR 1e-3 over all impostor pairs of the CelebA eval identities, "
                    "PyTorch fp32")


def ship(student: str, out: Path, rows: dict, bench_rows: list[dict], preset_name: str,
         threshold: float, machine: str) -> None:
    """Put a trained student into the package (lafs_edge.models.shipping: fp16 weights with the
    open-set threshold inside, the sha256 index, the model card)."""
    from lafs_edge.models.shipping import ModelCard, ship_student

    trained = final_run(out, student, PRESETS[preset_name]) / "model.pt"
    card = ModelCard(THRESHOLD_SOURCE, card_training(student, out, preset_name, machine),
                     card_accuracy(student, rows, bench_rows), TERMS)
    entry = ship_student(student, trained, threshold, card)
    print(f"shipped {entry['file']} (sha256 {entry['sha256'][:12]}..., threshold {threshold:.3f})",
          flush=True)


def training_minutes(out: Path, student: str, preset: dict) -> float:
    """Wall time of a student's runs from their logs' time stamps (the first logged steps of
    each run extrapolated)."""
    total = 0.0
    for stage in range(len(stages(preset, student))):
        metrics = run_dir(out, student, stage) / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        first, last = rows[0], rows[-1]
        total += (last["time"] - first["time"]) / 60 * last["step"] / max(1, last["step"] - first["step"])
    return total


def steps_text(student: str, preset: dict) -> str:
    return " + ".join(f"{settings['steps'][student]} steps (lr {settings['lr'][student]})"
                      for settings in stages(preset, student))


def resumes(log: Path) -> list[str]:
    """The run's stops and config changes, as its log recorded them."""
    if not log.is_file():
        return []
    marks = [line.strip() for line in log.read_text().splitlines()
             if line.startswith(("resuming from", "warning: resuming with a changed config"))]
    return (["The run was stopped and resumed (its log):", "", *[f"- {m}" for m in marks], ""]
            if marks else [])


def card_training(student: str, out: Path, preset_name: str, machine: str) -> list[str]:
    """The model card's Training section: data, steps, machine, the commands, any resumes."""
    preset = PRESETS[preset_name]
    runs = range(len(stages(preset, student)))
    return [
        f"Distilled from face-reidentification-retail-0095 (cosine loss through a linear "
        f"projection to its 256-d embedding) on the unlabelled pool: "
        f"{sum(1 for _ in (REPO / POOL_LIST).open())} faces of "
        + ", ".join(POOL_SOURCES[:-1]) + " and the 132 CelebA train identities, aligned by "
        f"their 5 points. {steps_text(student, preset)} x batch {preset['batch']}"
        + (" (the second run starts from the first one's weights with a new cosine schedule)"
           if len(runs) > 1 else "")
        + f", {preset['targets']} teacher targets (each face and its mirror image), cosine lr, "
        f"AdamW, {preset['precision']} autocast, {preset['threads']} thread. Machine: {machine}. "
        f"Training wall time {training_minutes(out, student, preset):.0f} min (from the logs; both "
        f"students side by side). Commands (run by `python experiments/edge_students.py --preset "
        f"{preset_name}`):", "",
        "```", *[shlex.join(distill_argv(student, preset, Path("runs/experiments/edge_students"),
                                         stage)) for stage in runs],
        "```", "", *[line for stage in runs
                     for line in resumes(out / f"{run_dir(out, student, stage).name}.log")]]


def card_accuracy(student: str, rows: dict, bench_rows: list[dict]) -> list[str]:
    """The model card's Accuracy section: the protocol and this student's rows of the table."""
    return [
        "Nothing below was used for training or int8 calibration. ORL and Yale aligned by the "
        "device pipeline (MediaPipe); rank-1 = mean over 5 draws of k enrolled images per "
        "person. CelebA: the 44 eval identities (all genuine pairs, as many impostor pairs).", "",
        *accuracy_table({k: v for k, v in rows.items()
                         if k.startswith(("teacher-fp16", f"{student}-pytorch",
                                          f"{student}-openvino-int8", f"{student}-tflite-int8"))},
                        bench_rows)]


DEPLOY_BEGIN, DEPLOY_END = "<!-- edge_students: begin -->", "<!-- edge_students: end -->"


README_BEGIN, README_END = "<!-- shipped students: begin -->", "<!-- shipped students: end -->"
README_ROWS = ("teacher-fp16", "part_fvit_tiny-pytorch-fp32", "part_fvit_tiny-openvino-int8",
               "part_fvit_tiny-tflite-int8", "mobilefacenet-pytorch-fp32",
               "mobilefacenet-openvino-int8", "mobilefacenet-tflite-int8")


def update_readme(rows: dict, bench_rows: list[dict], machine: str,
                  command: str = "python experiments/edge_students.py --ship") -> None:
    """The README's accuracy table of the shipped students (between its markers)."""
    readme = REPO / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{readme}: the markers {README_BEGIN} / {README_END} are missing")
    table = accuracy_table({name: rows[name] for name in README_ROWS}, bench_rows)
    block = "\n".join([README_BEGIN, *table, "",
                       f"Generated by `{command}` on {machine}; "
                       "rank-1: mean (std) over 5 draws of k enrolled images per person; latency: "
                       "`lafs-edge bench`, median of 100 runs. Protocol and every runtime and "
                       "precision: [results.md](docs/results.md#the-shipped-students).", README_END])
    head, rest = text.split(README_BEGIN, 1)
    readme.write_text(head + block + rest.split(README_END, 1)[1])


def update_deploy_doc(reports: dict, bench_md: str, machine: str,
                      command: str = "python experiments/edge_students.py") -> None:
    """Replace the generated block of docs/deploy.md (between the markers) with this run's
    parity and latency tables."""
    doc = REPO / "docs" / "deploy.md"
    text = doc.read_text()
    if DEPLOY_BEGIN not in text or DEPLOY_END not in text:
        raise SystemExit(f"{doc}: the markers {DEPLOY_BEGIN} / {DEPLOY_END} are missing")
    block = "\n".join([
        DEPLOY_BEGIN,
        f"Generated by `{command}` on {machine}; students and protocol in "
        "[results.md](results.md#the-shipped-students).", "",
        "### Parity on ORL (400 MediaPipe-aligned faces; never used in training, calibration or "
        "thresholds)", "", *parity_table(reports), "",
        "### Latency", "", bench_md.strip(), DEPLOY_END])
    head, rest = text.split(DEPLOY_BEGIN, 1)
    doc.write_text(head + block + rest.split(DEPLOY_END, 1)[1])


def package_students(out: Path) -> Path:
    """The package's shipped students as run folders (`out/<student>/model.pt`, what the stages
    below read), in a folder named by their sha256s: a new ship gets new exports, a rerun reuses.
    A student whose weights did not change keeps the exports and verify reports it has in an
    earlier package's folder (a ship of one student re-exports that one only)."""
    from lafs_edge.models import create_model, save_checkpoint
    from lafs_edge.models.pretrained import shipped

    index = shipped()
    digests = [index[s]["sha256"][:8] for s in STUDENTS]
    folder = out / "-".join(digests)
    for position, student in enumerate(STUDENTS):
        if not (folder / student / "model.pt").is_file():
            save_checkpoint(create_model(student, pretrained=True), folder / student / "model.pt")
        earlier = [f for f in sorted(out.iterdir()) if f != folder and f.is_dir()
                   and f.name.split("-")[position:position + 1] == digests[position:position + 1]]
        if earlier:
            reuse_exports(earlier[-1] / "artifacts", folder / "artifacts", student)
    return folder


def reuse_exports(source: Path, target: Path, student: str) -> None:
    """Copy `student`'s finished exports (artifact folders with their manifest, and verify
    reports) from `source` into `target` where `target` lacks them."""
    import shutil

    for name in (f"{student}-{t}-{p}" for t, p in ARTIFACTS):
        artifact, report = source / name, source / f"{name}.verify.json"
        if (artifact / "manifest.json").is_file() and not (target / name).exists():
            shutil.copytree(artifact, target / name)
        if report.is_file() and not (target / report.name).exists():
            shutil.copyfile(report, target / report.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/experiments/edge_students"))
    parser.add_argument("--skip-train", action="store_true", help="use the students in --out")
    parser.add_argument("--ship", action="store_true",
                        help="also put the trained students into the package (lafs_edge/weights: "
                             "fp16 weights, sha256 index, model cards)")
    parser.add_argument("--package", action="store_true",
                        help="no training: export, verify and measure the package's shipped "
                             "students (after experiments/campaign.py --ship) and rewrite the "
                             "README's table and docs/deploy.md")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    seconds: dict[str, float] = {}
    if args.package:
        return evaluate_package(args.out / "package")

    def timed(stage: str, fn, *fn_args):
        started = time.perf_counter()
        result = fn(*fn_args)
        seconds[stage] = round(time.perf_counter() - started)
        return result

    if not args.skip_train:
        timed("distillation", train_students, preset, args.out)
    # One artifact folder per trained result: a rerun reuses finished exports of the same model.
    artifacts = args.out / ("artifacts" if "continue" not in preset else "artifacts-continued")
    reports = timed("export and verify", export_and_verify, args.out, preset, artifacts)
    rows = timed("accuracy", accuracy, args.out, preset, artifacts)
    bench_json = timed("bench", bench, artifacts)
    thresholds = timed("thresholds", open_set_thresholds, args.out, preset)
    cosines = timed("demo photos", demo_photo_cosines, artifacts, thresholds)
    latency = {r["artifact"]: r["median_ms"] for r in bench_json["rows"]
               if r["batch"] == 1 and r["threads"] == 1}
    RESULTS.mkdir(parents=True, exist_ok=True)
    images = plots(rows, latency)
    machine = bench_json.get("machine") or platform.processor() or platform.machine()
    write_json(RESULTS / "edge_students.json", {"preset": args.preset, "machine": machine,
                                               "stage_seconds": seconds, "rows": rows,
                                               "parity": reports, "bench": bench_json,
                                               "demo_photos": cosines})
    (RESULTS / "edge_students.md").write_text(
        fragment(args, preset, rows, reports, bench_json["rows"], images, args.out, machine,
                 seconds, cosines))
    update_deploy_doc(reports, (artifacts / "bench.md").read_text(), machine)
    if args.ship:
        update_readme(rows, bench_json["rows"], machine)
        for student in STUDENTS:
            ship(student, args.out, rows, bench_json["rows"], args.preset, thresholds[student],
                 machine)
    subprocess.run([sys.executable, str(Path(__file__).parent / "report.py")], check=True)
    print(f"done in {sum(seconds.values()):.0f} s ({seconds}): docs/results/edge_students.md")


def evaluate_package(out: Path) -> None:
    """The README's table, docs/deploy.md's parity and latency, and docs/results.md's section
    of the package's students (every runtime and precision)."""
    folder = package_students(out)
    preset = {**PRESETS["cpu"], "continue": {}}   # one run folder per student: its model.pt
    artifacts = folder / "artifacts"
    reports = export_and_verify(folder, preset, artifacts)
    accuracy_json = artifacts / "accuracy.json"   # the folder is named by the weights' sha256s
    if not accuracy_json.is_file():
        write_json(accuracy_json, accuracy(folder, preset, artifacts))
    rows = json.loads(accuracy_json.read_text())
    bench_json = bench(artifacts)
    machine = bench_json.get("machine") or platform.processor() or platform.machine()
    command = "python experiments/edge_students.py --package"
    update_deploy_doc(reports, (artifacts / "bench.md").read_text(), machine, command)
    update_readme(rows, bench_json["rows"], machine, command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shipped_students.md").write_text(package_fragment(rows, bench_json["rows"],
                                                                  machine, command))
    subprocess.run([sys.executable, str(Path(__file__).parent / "report.py")], check=True)
    print(f"README.md, docs/deploy.md and docs/results.md: the package's students ({folder.name})")


def package_fragment(rows: dict, bench_rows: list[dict], machine: str, command: str) -> str:
    """docs/results.md's section on what lafs_edge/weights/ holds now."""
    from lafs_edge.models.pretrained import shipped
    from lafs_edge.runtime.shipped import LATENCY_TARGET, default_student

    index = shipped()
    lines = ["## The shipped students", "",
             f"What `lafs_edge/weights/` holds now, measured by `{command}` on {machine} (run by "
             "`experiments/campaign.py --ship` after each ship). Protocol as in the edge "
             "students' section below: ORL and Yale aligned by MediaPipe, k-shot rank-1 = mean "
             "(std) over 5 draws; CelebA: the 44 eval identities, all genuine pairs and as many "
             "impostor pairs. The campaign's own CelebA figure (all 545,882 impostor pairs) and "
             "how each student was trained are in its model card.", "",
             "| student | sha256 | CelebA TAR@FAR1e-3, all pairs | OpenVINO int8 latency / "
             "reference | model card |", "|---|---|---|---|---|"]
    for student, entry in sorted(index.items()):
        tar, ratio = entry.get("celeba_tar"), entry.get("latency_ratio")
        lines.append(f"| {student} | `{entry['sha256'][:12]}` | "
                     f"{'-' if tar is None else f'{tar:.3f}'} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
                     f"[{entry['card']}](../lafs_edge/weights/{entry['card']}) |")
    lines += ["", f"Default student of `enroll`, `identify` and `demo`: **{default_student()}** "
              f"(the most accurate within {LATENCY_TARGET}x the latency reference).", "",
              *accuracy_table({k: v for k, v in rows.items() if "untrained" not in k},
                              bench_rows), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
