"""`make quickstart`: the main job, end to end, on a fresh machine without ../shared.

Steps (each prints what it produced; a summary table closes the run):
  1. the model registry (`lafs-edge models`: which models ship trained weights);
  2. sample faces for the training chain. Default: generated from what scikit-image ships (no
     download): each of the first `--people` faces of `skimage/data/lfw_subset.npy` (real LFW
     faces, 25x25 grey, upscaled to 100x100 and padded) and the astronaut photo become one
     person, with `--views` photos made by random rotation, scale, shift, mirror, light and
     blur. `--data DIR` uses real identity folders instead (DIR/person/photo). Every photo goes
     through MediaPipe detection + mesh; the 5 points give the aligned 112x112 crops (identity
     folders, for the supervised stages) and a landmark list (wild5 format, unlabelled stages);
  3. PROOF OF THE TRAINING CHAIN, not a model to use: a few steps of each training stage
     through the CLI (supervised part fViT, LAFS pretraining with landmarks from stage 1,
     fine-tuning, distillation of the fine-tuned model; smoke configs, seconds each);
  4. the SHIPPED student (trained weights inside the package, `--student`) exported to OpenVINO,
     TFLite and Core ML at int8 (calibrated on the step-2 faces), each checked against PyTorch
     with `lafs-edge verify` (Core ML's numeric check needs macOS; elsewhere its program is
     checked);
  5. the device, with the shipped student's OpenVINO int8 artifact, on real photos that packages
     ship (apps/group_photos.py; fetched once, sha256-checked): the six group photos of the npm
     package @vladmandic/face-api and the four portraits of the face_recognition sdist on PyPI.
     Enroll two people from one photo each, run the headless demo on the eight other photos, and
     score it: each enrolled person named where they appear, everyone else called unknown.

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

from lafs_edge.apps.group_photos import CAST
from lafs_edge.errors import UserError
from lafs_edge.runtime.shipped import default_student

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
    from lafs_edge.cli import main

    code = main([str(a) for a in args])
    if code != 0:
        raise UserError(f"`lafs-edge {' '.join(map(str, args))}` failed (exit {code})")


# --- 2. sample faces ----------------------------------------------------------------------------

def generate_people(out: Path, people: int, views: int, seed: int = 0) -> Path:
    """Identity folders of generated photos (see the module docstring); returns the root."""
    import cv2
    import skimage

    from lafs_edge.gallery.adapt import augment_crop
    from lafs_edge.image import read_image, write_image

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

    from lafs_edge.align import align_face
    from lafs_edge.image import read_image, write_image
    from lafs_edge.landmarks import FaceAnalyzer
    from lafs_edge.image_folders import scan_labelled

    samples = scan_labelled(photos)
    if not samples:
        raise UserError(f"no labelled photos under {photos} (expected DIR/person/photo)")
    analyzer, lines = FaceAnalyzer(), []
    found: dict[str, list[Path]] = {}
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
    # Every step logged: the table's loss (metrics.jsonl) is then the one the command printed.
    common = [f"optim.max_steps={steps}", f"train.checkpoint_every={steps}", "train.log_every=1",
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


# --- 4. export of the shipped student ------------------------------------------------------------

def export_shipped(student: str, aligned: Path, out: Path, targets) -> dict:
    """{target: (artifact folder, parity line)} of the shipped student at int8."""
    from lafs_edge.models.pretrained import weights_file
    from lafs_edge.runtime.manifest import read_manifest

    weights = weights_file(student)
    cli("export", weights, "--target", ",".join(targets), "--precision", "int8", "--calib", aligned,
        "--out", out / "artifacts", "--name", student)
    results = {}
    for target in targets:
        folder = out / "artifacts" / f"{student}-{target}-int8"
        cli("verify", folder, "--data", aligned, "--model", weights)
        results[target] = (folder, _parity_text(read_manifest(folder)[0].parity))
    return results


def _parity_text(parity: dict) -> str:
    if "mean_cosine" in parity:
        return f"parity cosine mean {parity['mean_cosine']:.5f}, min {parity['min_cosine']:.5f}"
    return "program checked (numeric parity needs macOS)"


# --- 5. the device: recognition on real group photos --------------------------------------------

def enrollment_photo(photo: Path, index: int, analyzer, out: Path) -> Path:
    """The region of face `index` (left to right) of a group photo, with any other face in it
    greyed out, so that `enroll` sees exactly one face."""
    from lafs_edge.image import read_image, write_image

    image = read_image(photo)
    faces = sorted(analyzer.analyze(image), key=lambda f: f.box[0])
    if index >= len(faces):
        raise UserError(f"{photo.name}: face {index} not found ({len(faces)} faces detected)")
    x0, y0, x1, y1 = faces[index].box
    margin = 0.6 * (x1 - x0)
    left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
    right, bottom = int(min(image.shape[1], x1 + margin)), int(min(image.shape[0], y1 + margin))
    region = image.copy()
    for number, face in enumerate(faces):
        if number != index:
            a, b, c, d = face.box.astype(int)
            region[max(0, b):max(0, d), max(0, a):max(0, c)] = 128
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(out, region[top:bottom, left:right])
    return out


def run_device(artifact: Path, out: Path) -> dict:
    """Enroll the cast (one photo each), run the headless demo on the other photos, and score
    every face it reports against who is really there."""
    import shutil

    from lafs_edge.apps.group_photos import ENROLLMENT_PHOTOS, PHOTOS, expected_names, fetch_photos
    from lafs_edge.landmarks import FaceAnalyzer

    photos = fetch_photos()
    gallery = out / "people.db"
    gallery.unlink(missing_ok=True)
    analyzer = FaceAnalyzer()
    for name, ((photo, index), _) in CAST.items():
        shot = enrollment_photo(photos / photo, index, analyzer, out / "enroll" / f"{name}.jpg")
        cli("enroll", name, shot, "--model", artifact, "--gallery", gallery)
    scenes = out / "scenes"
    shutil.rmtree(scenes, ignore_errors=True)
    scenes.mkdir(parents=True)
    shown = [name for name in PHOTOS if name not in ENROLLMENT_PHOTOS]
    for name in shown:
        shutil.copyfile(photos / name, scenes / name)
    annotated, events, snapshot = out / "annotated.avi", out / "events.jsonl", out / "demo_frame.png"
    # --redetect-every 1: unrelated photos, nothing to track from one to the next.
    cli("demo", "--source", scenes, "--headless", "--out", annotated, "--log", events,
        "--snapshot", snapshot, "--model", artifact, "--gallery", gallery, "--redetect-every", 1)
    frames = [json.loads(line) for line in events.read_text().splitlines()]
    frames = [e for e in frames if e["event"] == "frame"]
    verdicts = []
    for photo, frame in zip(sorted(shown), frames):
        faces = sorted(frame["faces"], key=lambda f: f["box"][0])
        for face, truth in zip(faces, expected_names(photo, len(faces))):
            verdicts.append((photo, truth, face["name"], face["score"]))
    return {"gallery": gallery, "video": annotated, "events": events, "snapshot": snapshot,
            "cast": list(CAST), "verdicts": verdicts}


def wrong_verdicts(verdicts: list[tuple]) -> list[tuple]:
    """`run_device`'s verdicts (photo, truth, name, score) where the demo named someone else:
    an enrolled person missed or called by another name, or a stranger named."""
    return [v for v in verdicts if v[1] != v[2]]


# --- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="identity folders of real photos (DIR/person/photo) for the training "
                             "chain; default: faces generated from scikit-image's samples")
    parser.add_argument("--out", type=Path, default=Path("runs/quickstart"))
    parser.add_argument("--people", type=int, default=16, help="generated people (plus the astronaut)")
    parser.add_argument("--views", type=int, default=6, help="generated photos per person")
    parser.add_argument("--steps", type=int, default=8, help="training steps per stage")
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--student", default=None,
                        help="the shipped student to export and run on the device (default: the "
                             "one the device commands use, `default_student()`)")
    parser.add_argument("--targets", default=",".join(EXPORT_TARGETS),
                        help="export targets, comma-separated (the first one runs the demo)")
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
    from lafs_edge.models.pretrained import shipped

    out = args.out
    args.student = args.student or default_student()
    if args.data is not None:   # bad input stops before anything runs
        from lafs_edge.image_folders import scan_labelled

        if not args.data.is_dir() or not scan_labelled(args.data):
            raise UserError(f"no labelled photos under {args.data} (expected DIR/person/photo)")
    if args.student not in shipped():
        raise UserError(f"--student {args.student}: no shipped weights (shipped: "
                        f"{', '.join(shipped()) or 'none'})")
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
    print(f"[3/5] proof of the training chain: {args.steps} steps of each stage "
          "(seconds of training: these models recognise no one)")
    models = train_stages(aligned, list_file, out, args.steps, args.batch)
    for stage, model in models.items():
        produced.add(f"training chain: {stage}", model, loss_summary(model.parent))
    print(f"[4/5] the shipped student {args.student}: int8 export with the parity check")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    exports = export_shipped(args.student, aligned, out, targets)
    for target, (folder, parity) in exports.items():
        produced.add(f"{args.student} {target} int8", folder, parity)
    print(f"[5/5] the device: enroll {len(CAST)} people from real photos, headless demo on others")
    device = run_device(exports[targets[0]][0], out / "device")
    verdicts = device["verdicts"]
    known = [v for v in verdicts if v[1] != "unknown"]
    named = sum(truth == name for _, truth, name, _ in known)
    strangers = [v for v in verdicts if v[1] == "unknown"]
    rejected = sum(name == "unknown" for _, _, name, _ in strangers)
    wrong = wrong_verdicts(verdicts)
    for verdict in verdicts:
        photo, truth, name, score = verdict
        mark = "WRONG" if verdict in wrong else "ok"
        print(f"  {photo}: {name} ({score:.2f}), truly {truth}: {mark}")
    produced.add("gallery", device["gallery"], f"{', '.join(device['cast'])} enrolled, one photo each")
    produced.add("event log", device["events"],
                 f"enrolled people named {named}/{len(known)}, strangers called unknown "
                 f"{rejected}/{len(strangers)}")
    produced.add("annotated photos", device["video"], f"{len(set(v[0] for v in verdicts))} photos")
    produced.add("snapshot", device["snapshot"], "annotated frame")


def loss_summary(run_dir: Path) -> str:
    """"8 steps, loss 14.1398 -> 11.5153": the run's first and last step losses, as the train
    command printed them (both read the per-step losses; the quickstart logs every step)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return ""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    losses = [m for m in lines if "loss" in m]
    if not losses:
        return ""
    steps = losses[-1]["step"]
    return (f"{steps} step{'s' if steps != 1 else ''}, loss {losses[0]['loss']:.4f} -> "
            f"{losses[-1]['loss']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
