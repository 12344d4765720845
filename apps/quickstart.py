"""`make quickstart`: the main job, end to end, on a fresh machine without ../shared.

Steps (each prints what it produced; a summary table closes the run):
  1. the model registry (`lafs-edge models`);
  2. sample faces. Default: generated from what scikit-image ships (no download): each of the
     first `--people` faces of `skimage/data/lfw_subset.npy` (real LFW faces, 25x25 grey,
     upscaled to 100x100 and padded) and the astronaut photo become one person, with `--views`
     photos made by random rotation, scale, shift, mirror, light and blur. `--data DIR` uses
     real identity folders instead (DIR/person/photo). Every photo goes through MediaPipe
     detection + mesh; the 5 points give the aligned 112x112 crops (identity folders, for the
     supervised stages) and a landmark list (wild5 format, for the unlabelled stages);
  3. a short run of each training stage through the CLI: supervised part fViT, LAFS pretraining
     (landmarks from stage 1), fine-tuning of the pretrained model, distillation of the
     fine-tuned model into a student (smoke configs: this shows the machinery, not accuracy);
  4. export of the last model to OpenVINO, TFLite and Core ML with the parity check
     (`lafs-edge export`, then `lafs-edge verify` on the aligned faces; Core ML's numeric
     check needs macOS, elsewhere its program is checked);
  5. the device: enroll a few people into a gallery, train the on-device adapter, assemble a
     short video of enrolled people and one never enrolled, run the headless demo on it
     (annotated video, event log, snapshot) and report whom it named.

    python -m lafs_edge.apps.quickstart [--data DIR] [--out runs/quickstart] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

EXPORT_TARGETS = ("openvino", "tflite", "coreml")


@dataclass
class Produced:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, what: str, where, details: str = "") -> None:
        self.rows.append((what, str(where), details))

    def table(self) -> str:
        width = max(len(w) for w, _, _ in self.rows) if self.rows else 4
        place = max(len(p) for _, p, _ in self.rows) if self.rows else 5
        lines = [f"| {'what':<{width}} | {'where':<{place}} | details |",
                 f"|{'-' * (width + 2)}|{'-' * (place + 2)}|---------|"]
        lines += [f"| {w:<{width}} | {p:<{place}} | {d} |" for w, p, d in self.rows]
        return "\n".join(lines)


def cli(*args) -> None:
    """Run one `lafs-edge` command in this process; a failure stops the quickstart."""
    from ..cli import main

    code = main([str(a) for a in args])
    if code != 0:
        raise UserError(f"`lafs-edge {' '.join(map(str, args))}` failed (exit {code})")


# --- 2. sample faces ----------------------------------------------------------------------------

def generate_people(out: Path, people: int, views: int, seed: int = 0) -> Path:
    """Identity folders of generated photos (see the module docstring); returns the root."""
    import cv2
    import skimage

    from ..gallery.adapt import augment_crop
    from ..image import read_image, write_image

    data = Path(skimage.__file__).parent / "data"
    faces = np.load(data / "lfw_subset.npy")[:100]          # the first 100 are faces
    if not 1 <= people <= len(faces):
        raise UserError(f"--people must be 1-{len(faces)}")
    sources = {"astronaut": read_image(data / "astronaut.png")}
    for number in range(people):
        grey = cv2.resize((faces[number] * 255).astype(np.uint8), (100, 100),
                          interpolation=cv2.INTER_CUBIC)
        grey = cv2.copyMakeBorder(grey, 20, 20, 20, 20, cv2.BORDER_REPLICATE)
        sources[f"lfw{number:02d}"] = np.repeat(grey[:, :, None], 3, axis=2)
    rng = np.random.default_rng(seed)
    for name, image in sources.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for view in range(views):
            photo = image if view == 0 else augment_crop(image, rng)
            write_image(out / name / f"{view}.png", photo)
    return out


def prepare_faces(photos: Path, out: Path, progress: bool = True) -> tuple[Path, Path, dict]:
    """Detect and align every photo of the identity folders under `photos`: aligned crops in
    out/aligned/<person>/ and a wild5-format landmark list out/landmarks.txt (absolute paths;
    `photos` is only read). Returns (aligned root, list file, {person: [photo paths]})."""
    from tqdm import tqdm

    from ..align import align_face
    from ..image import read_image, write_image
    from ..landmarks import FaceAnalyzer
    from ..train.data.folders import scan_labelled

    samples = scan_labelled(photos)
    if not samples:
        raise UserError(f"no labelled photos under {photos} (expected DIR/person/photo)")
    analyzer, lines, found = FaceAnalyzer(), [], {}
    aligned_root = out / "aligned"
    for path, person in tqdm(samples, desc="detect + align", unit="photo", disable=not progress):
        image = read_image(path)
        faces = analyzer.analyze(image)
        if not faces:
            continue
        points = faces[0].points5
        (aligned_root / person).mkdir(parents=True, exist_ok=True)
        write_image(aligned_root / person / f"{Path(path).stem}.png", align_face(image, points))
        lines.append(f"{Path(path).resolve()} " + " ".join(f"{v:.2f}" for v in np.r_[points[:, 0], points[:, 1]]))
        found.setdefault(person, []).append(Path(path))
    if len(found) < 3:
        raise UserError(f"faces found for {len(found)} people under {photos}; the quickstart "
                        "needs at least 3")
    list_file = out / "landmarks.txt"   # absolute photo paths: nothing is written beside --data
    list_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return aligned_root, list_file, found


# --- 3. training ------------------------------------------------------------------------------

def train_stages(aligned: Path, list_file: Path, out: Path, steps: int,
                 batch: int = 8) -> dict[str, Path]:
    """One short run of each stage; returns {stage: model.pt}."""
    runs = out / "train"
    common = [f"optim.max_steps={steps}", f"train.checkpoint_every={steps}", "train.log_every=5",
              "data.num_workers=0", f"optim.batch_size={batch}"]
    models = {}
    print("  supervised part fViT (CosFace) on the aligned identity folders")
    cli("train", "supervised", "--config", "supervised_smoke", f"data.root={aligned}",
        f"output_dir={runs / 'supervised'}", *common)
    models["supervised"] = runs / "supervised" / "model.pt"
    print("  LAFS self-supervised pretraining on the landmark list (stage-1 landmark CNN)")
    cli("train", "pretrain", "--config", "pretrain_smoke", f"data.list_file={list_file}",
        f"landmarks.checkpoint={models['supervised']}", f"output_dir={runs / 'pretrain'}", *common)
    models["pretrain"] = runs / "pretrain" / "model.pt"
    print("  fine-tuning the pretrained model on the labelled faces (k-shot)")
    shots = min(4, max(len(list(p.iterdir())) for p in aligned.iterdir() if p.is_dir()))
    cli("train", "finetune", "--config", "finetune_smoke", f"data.root={aligned}",
        f"data.kshot_k={shots}",
        f"finetune.pretrained={models['pretrain']}", f"finetune.landmarks={models['supervised']}",
        f"output_dir={runs / 'finetune'}", *common)
    models["finetune"] = runs / "finetune" / "model.pt"
    print("  distillation of the fine-tuned model into a student")
    cli("train", "distill", "--config", "distill_smoke", f"data.list_file={list_file}",
        f"distill.teacher={models['finetune']}", f"output_dir={runs / 'distill'}", *common)
    models["distill"] = runs / "distill" / "model.pt"
    return models


# --- 4. export ----------------------------------------------------------------------------------

def export_and_verify(model: Path, aligned: Path, out: Path, targets=EXPORT_TARGETS) -> dict:
    """{target: (artifact folder, parity line)}."""
    from ..runtime.manifest import read_manifest

    results = {}
    for target in targets:
        cli("export", model, "--target", target, "--out", out / "artifacts", "--pairs", aligned,
            "--name", "quickstart")
        folder = out / "artifacts" / f"quickstart-{target}-fp32"
        cli("verify", folder, "--data", aligned, "--model", model)
        parity = read_manifest(folder)[0].parity
        results[target] = (folder, _parity_text(parity))
    return results


def _parity_text(parity: dict) -> str:
    if "mean_cosine" in parity:
        return f"parity cosine mean {parity['mean_cosine']:.5f}, min {parity['min_cosine']:.5f}"
    return "program checked (numeric parity needs macOS)"


# --- 5. the device ------------------------------------------------------------------------------

def build_video(clips: list[list[Path]], path: Path, repeat: int = 3, size=(320, 320)) -> Path:
    """An .avi from groups of photos, each photo held `repeat` frames with a slow zoom (so the
    tracker and the landmark smoothing have something to do)."""
    import cv2

    from ..image import read_image

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    if not writer.isOpened():
        raise UserError(f"cannot write {path}")
    for photos in clips:
        for photo in photos:
            bgr = cv2.cvtColor(_letterbox(read_image(photo), size), cv2.COLOR_RGB2BGR)
            for step in range(repeat):
                zoom = 1 + 0.03 * step
                matrix = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), 0, zoom)
                writer.write(cv2.warpAffine(bgr, matrix, size, borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    return path


def _letterbox(rgb: np.ndarray, size) -> np.ndarray:
    import cv2

    scale = min(size[0] / rgb.shape[1], size[1] / rgb.shape[0])
    resized = cv2.resize(rgb, (int(rgb.shape[1] * scale), int(rgb.shape[0] * scale)))
    canvas = np.zeros((size[1], size[0], 3), np.uint8)
    y, x = (size[1] - resized.shape[0]) // 2, (size[0] - resized.shape[1]) // 2
    canvas[y:y + resized.shape[0], x:x + resized.shape[1]] = resized
    return canvas


def run_device(artifact: Path, found: dict[str, list[Path]], out: Path, enroll: int = 3,
               shots: int = 2, min_sharpness: float = 40.0) -> dict:
    """Enroll `enroll` people (their first `shots` photos), adapt, and run the headless demo on
    a video of their other photos followed by a person never enrolled."""
    gallery = out / "people.db"
    gallery.unlink(missing_ok=True)
    people = sorted(found, key=lambda p: (p != "astronaut", p))
    usable = [p for p in people if len(found[p]) > shots]
    if len(usable) < enroll + 1:
        raise UserError("too few people with enough photos for the demo")
    known, stranger = usable[:enroll], usable[enroll]
    for person in known:
        cli("enroll", person, *found[person][:shots], "--model", artifact, "--gallery", gallery,
            "--min-sharpness", min_sharpness)
    try:
        cli("adapt", "--model", artifact, "--gallery", gallery)
        adapted = "adapted"
    except UserError:   # refused (its reason is printed): identification runs without it
        adapted = "not adapted (see the error above)"
    clips = [found[p][shots:shots + 2] for p in known] + [found[stranger][:2]]
    video = build_video(clips, out / "demo_input.avi")
    annotated, events, snapshot = out / "annotated.mp4", out / "events.jsonl", out / "demo_frame.png"
    cli("demo", "--source", video, "--headless", "--out", annotated, "--log", events,
        "--snapshot", snapshot, "--model", artifact, "--gallery", gallery)
    truth = [p for p in known for _ in range(2 * 3)] + ["unknown"] * (2 * 3)
    frames = [json.loads(line) for line in events.read_text().splitlines()]
    faces = [e["faces"][0] if e.get("faces") else {} for e in frames if e["event"] == "frame"]
    named = [face.get("name", "no face") for face in faces]
    correct = sum(n == t for n, t in zip(named, truth))
    ranked = sum(face.get("best") == t for face, t in zip(faces, truth) if t != "unknown")
    return {"gallery": gallery, "adapted": adapted, "video": annotated, "events": events, "snapshot": snapshot,
            "known": known, "stranger": stranger, "correct": correct, "frames": len(named),
            "ranked": ranked, "known_frames": sum(t != "unknown" for t in truth),
            "summary": frames[-1]}


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="identity folders of real photos (DIR/person/photo); default: "
                             "faces generated from scikit-image's samples")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--people", type=int, default=16, help="generated people (plus the astronaut)")
    parser.add_argument("--views", type=int, default=6, help="generated photos per person")
    parser.add_argument("--steps", type=int, default=8, help="training steps per stage")
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--targets", default=",".join(EXPORT_TARGETS),
                        help="export targets, comma-separated")
    args = parser.parse_args(argv)
    produced, start = Produced(), time.perf_counter()
    try:
        run_all(args, produced)
    except (UserError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nquickstart finished in {time.perf_counter() - start:.0f} s\n")
    print(produced.table())
    return 0


def run_all(args: argparse.Namespace, produced: Produced) -> None:
    out = args.out
    if args.data is not None:   # bad input stops before anything runs
        from ..train.data.folders import scan_labelled

        if not args.data.is_dir() or not scan_labelled(args.data):
            raise UserError(f"no labelled photos under {args.data} (expected DIR/person/photo)")
    out.mkdir(parents=True, exist_ok=True)
    print("[1/5] model registry")
    cli("models")
    print("[2/5] sample faces: detect, mesh, align")
    if args.data is not None:
        photos = args.data
    else:
        photos = generate_people(out / "photos", args.people, args.views)
        produced.add("generated photos", photos, f"{args.people + 1} people x {args.views} "
                     "(scikit-image lfw_subset + astronaut)")
    aligned, list_file, found = prepare_faces(photos, out)
    faces = sum(map(len, found.values()))
    produced.add("aligned faces (112x112)", aligned, f"{faces} faces of {len(found)} people")
    produced.add("landmark list (wild5 format)", list_file, f"{faces} lines")
    print(f"[3/5] training stages, {args.steps} steps each")
    models = train_stages(aligned, list_file, out, args.steps, args.batch)
    for stage, model in models.items():
        produced.add(f"{stage} model", model, _last_metrics(model.parent))
    print("[4/5] export with the parity check")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    exports = export_and_verify(models["distill"], aligned, out, targets)
    for target, (folder, parity) in exports.items():
        produced.add(f"{target} artifact", folder, parity)
    print("[5/5] the device: enroll, adapt, headless demo")
    artifact = exports[targets[0]][0]
    # lfw_subset faces are 25x25 upscaled: softer than the gate's default for real photos
    device = run_device(artifact, found, out, min_sharpness=40.0 if args.data else 10.0)
    summary = device["summary"]
    produced.add("gallery", device["gallery"], f"{', '.join(device['known'])} enrolled, {device['adapted']}")
    produced.add("annotated video", device["video"],
                 f"{device['frames']} frames, {summary['fps']} FPS, median "
                 f"{summary['median_ms'].get('total', 0):.1f} ms/frame")
    produced.add("event log", device["events"],
                 f"{device['correct']}/{device['frames']} frames named right (stranger "
                 f"{device['stranger']} should be unknown); best candidate right in "
                 f"{device['ranked']}/{device['known_frames']} frames of enrolled people")
    produced.add("snapshot", device["snapshot"], "annotated frame")


def _last_metrics(run_dir: Path) -> str:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return ""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    last = next((m for m in reversed(lines) if "loss" in m), None)
    return f"step {last.get('step')}, loss {last['loss']:.3f}" if last else ""


if __name__ == "__main__":
    sys.exit(main())
