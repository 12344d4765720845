"""SIGKILL trials: enroll, import, delete and export killed at random moments, and a large
import killed inside its write transaction.

    python benchmarks/gallery_kill_trials.py --trials 120 [--people 40 --seed 0]

Each trial copies one baseline gallery into a fresh folder, runs one operation in a child process
forked from this one (which has imported everything, so the child starts working at once), kills
it with SIGKILL at a moment drawn uniformly over the operation's duration (measured unkilled,
then the last trial of it that finished before its kill moment), then checks:
- corrupt: the gallery does not open, or `PRAGMA integrity_check` / `foreign_key_check` fails;
- half-done: its content (people, their shots, every vector) is neither the state before the
  operation nor the state after it (measured once, unkilled); for an export, the gallery changed
  or the output file exists but is not the complete export;
- leftover temporaries: after the next run (the same command run again to the end, as a user
  would), a `.NAME.tmpPID` file or a rollback `-journal` is still in the folder.
A deletion killed after its commit but before its erasure is "done" (the person is gone) and
the rerun must finish the erasure: the deleted vectors and name must then be absent from the
raw bytes of the database and its WAL.

`import-large` imports an export of --large-people people (3 shots each, with crops) and is
killed inside its write transaction: the child reports through a pipe when BEGIN IMMEDIATE has
succeeded, and the kill comes a moment drawn uniformly over the transaction's measured length
(BEGIN to COMMIT) after that, so every one of these kills lands while the transaction is open.

import, delete and export run the real CLI (`lafs_edge.cli.main(["gallery", ...])`); enroll
runs the library call the CLI makes (`Gallery.enroll`) with synthetic shots prepared before the
fork, since the CLI's photo processing (seconds of model loading) would take most of the time and
rarely be killed while writing.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lafs_edge.cli import main as lafs_edge
from lafs_edge.gallery import Gallery, Shot

FINGERPRINT = "f" * 64
OPERATIONS = ("enroll", "import", "delete", "export", "import-large")
DELETED = "person-0007"


def run_operation(operation: str, folder: Path, shots: int) -> int:
    """One operation, as the user runs it (the CLI's main) or, for enroll, as the CLI calls it."""
    if operation == "enroll":
        with Gallery(folder / "people.db") as gallery:
            gallery.enroll("newcomer", enroll_batch(shots), FINGERPRINT, "synthetic",
                           duplicate_cosine=1.01)
        return 0
    args = {"import": ["gallery", "import", folder / "incoming.json"],
            "import-large": ["gallery", "import", folder / "large.json"],
            "delete": ["gallery", "delete", DELETED],
            "export": ["gallery", "export", folder / "out.json"]}[operation]
    return lafs_edge([*map(str, args), "--gallery", str(folder / "people.db")])


@functools.lru_cache(maxsize=1)
def enroll_batch(shots: int) -> list[Shot]:
    """The enroll operation's shots; built once in the parent, inherited by every child."""
    rng = np.random.default_rng(12345)
    return [Shot(v, f"new{i}.jpg", png_crop(rng)) for i, v in enumerate(unit_vectors(rng, shots))]


def start(operation: str, folder: Path, shots: int, report_fd: int | None = None) -> int:
    """Fork a child that runs the operation and exits with its code (the parent has imported
    everything already, so the child starts working at once: kill moments fall inside the
    operation, not in interpreter start-up). With `report_fd`, the child writes b"B" there when
    a write transaction has begun and b"C" when it has committed."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        if report_fd is not None:
            report_transactions(report_fd)
        code = run_operation(operation, folder, shots)
    finally:
        os._exit(code)


def report_transactions(fd: int) -> None:
    """Wrap Gallery.transaction (in this child only) to say when BEGIN IMMEDIATE succeeded and
    when COMMIT returned."""
    original = Gallery.transaction

    @contextlib.contextmanager
    def transaction(self):
        with original(self) as db:
            os.write(fd, b"B")
            yield db
        os.write(fd, b"C")

    Gallery.transaction = transaction  # type: ignore[method-assign]


def start_reporting(operation: str, folder: Path, shots: int) -> tuple[int, int]:
    """(pid, read end of the pipe the child reports its transaction on)."""
    read, write = os.pipe()
    pid = start(operation, folder, shots, write)
    os.close(write)
    return pid, read


def wait_for_report(read: int, expected: bytes, timeout: float = 300.0) -> float | None:
    """Seconds until `expected` arrives on the pipe; None when the child exited first."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            break
        data = os.read(read, 1)
        if not data:
            return None
        if data == expected:
            return time.perf_counter() - began
    return None


def wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def unit_vectors(rng: np.random.Generator, count: int, dim: int = 128) -> np.ndarray:
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def png_crop(rng: np.random.Generator) -> bytes:
    import cv2

    return cv2.imencode(".png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))[1].tobytes()


def build_baseline(folder: Path, people: int, seed: int, large_people: int) -> None:
    """people.db (people x 3 shots with PNG crops), incoming.json (an export of other
    people, to import) and large.json (`large_people` more, the large import)."""
    rng = np.random.default_rng(seed)
    with Gallery(folder / "people.db") as gallery:
        for number in range(people):
            shots = [Shot(v, f"p{number}-{i}.jpg", png_crop(rng))
                     for i, v in enumerate(unit_vectors(rng, 3))]
            gallery.enroll(f"person-{number:04d}", shots, FINGERPRINT, "synthetic")
    with Gallery(folder / "others.db") as others:
        for number in range(people // 2):
            shots = [Shot(v, f"o{number}-{i}.jpg", png_crop(rng))
                     for i, v in enumerate(unit_vectors(rng, 3))]
            others.enroll(f"visitor-{number:04d}", shots, FINGERPRINT, "synthetic")
        others.export(folder / "incoming.json")
    (folder / "others.db").unlink()
    with Gallery(folder / "large.db") as large:
        for number in range(large_people):
            shots = [Shot(v, f"l{number}-{i}.jpg", png_crop(rng))
                     for i, v in enumerate(unit_vectors(rng, 3))]
            large.enroll(f"arrival-{number:05d}", shots, FINGERPRINT, "synthetic")
        large.export(folder / "large.json")
    for leftover in folder.glob("large.db*"):
        leftover.unlink()


def state(gallery_path: Path) -> tuple:
    """Everything a change could touch: people, their shot counts, every vector."""
    with Gallery(gallery_path, readonly=True) as gallery:
        vectors, names = gallery.embeddings()
        return (tuple((p.name, p.shots) for p in gallery.people()), tuple(names),
                vectors.tobytes())


def corrupt(gallery_path: Path) -> str | None:
    try:
        with Gallery(gallery_path, readonly=True) as gallery:
            check = gallery.integrity_check()
            keys = gallery._connection.execute("PRAGMA foreign_key_check").fetchall()
    except Exception as e:  # noqa: BLE001 - any failure to open is the finding
        return f"does not open: {e}"
    if check != "ok" or keys:
        return f"integrity {check}, foreign keys {keys[:3]}"
    return None


def rerun(operation: str, folder: Path, shots: int) -> int:
    """The next run a user would make: the same command to the end (enroll is not repeated:
    its shots would all be near-duplicates; opening the gallery for writing cleans up)."""
    if operation == "enroll":
        with Gallery(folder / "people.db"):
            return 0
    return wait(start(operation, folder, shots))


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()
                  if ".tmp" in p.name or p.name.endswith("-journal"))


def measure(operation: str, baseline: Path, work: Path, shots: int) -> tuple[float, tuple, bytes]:
    """Duration of the operation (for import-large: of its write transaction, BEGIN to
    COMMIT), the gallery state after it, and its export."""
    folder = fresh_copy(baseline, work / f"measure-{operation}")
    began = time.perf_counter()
    if operation == "import-large":
        pid, read = start_reporting(operation, folder, shots)
        to_begin = wait_for_report(read, b"B")
        to_commit = wait_for_report(read, b"C")
        os.close(read)
        code = wait(pid)
        if to_begin is None or to_commit is None:
            raise RuntimeError("import-large reported no transaction")
        seconds = to_commit
    else:
        code = wait(start(operation, folder, shots))
        seconds = time.perf_counter() - began
    if code != 0:
        raise RuntimeError(f"{operation} failed unkilled (exit {code})")
    output = (folder / "out.json").read_bytes() if operation == "export" else b""
    return seconds, state(folder / "people.db"), output


def fresh_copy(baseline: Path, folder: Path) -> Path:
    shutil.copytree(baseline, folder)
    return folder


def judge(operation: str, folder: Path, before: tuple, after: tuple,
          export: bytes) -> tuple[str, str | None]:
    """(where the kill left things: before | after | no file | whole file, problem or None)."""
    now = state(folder / "people.db")
    if operation == "export":
        out = folder / "out.json"
        if now != before:
            return "changed", "export changed the gallery"
        if not out.exists():
            return "no file", None
        if out.read_bytes() != export:
            return "partial file", f"partial export file ({out.stat().st_size} bytes)"
        return "whole file", None
    if now == before:
        return "before", None
    return ("after", None) if now == after else ("neither", "neither before nor after")


def erased(folder: Path, secrets: list[bytes]) -> bool:
    raw = b"".join(p.read_bytes() for p in folder.glob("people.db*"))
    return not any(secret in raw for secret in secrets)


def deleted_secrets(baseline: Path) -> list[bytes]:
    with Gallery(baseline / "people.db", readonly=True) as gallery:
        vectors, _ = gallery.embeddings(DELETED)
    return [v.tobytes() for v in vectors] + [DELETED.encode()]


def kill_at(pid: int, delay: float) -> float | None:
    """SIGKILL the child `delay` seconds from now unless it exits first; returns how long it
    took when it did (None when it was killed)."""
    began = time.perf_counter()
    while time.perf_counter() - began < delay:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return time.perf_counter() - began
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    wait(pid)
    return None


def kill_in_transaction(pid: int, read: int, delay: float) -> tuple[float | None, float | None]:
    """`kill_at` while watching the pipe: (seconds to exit when the child finished first,
    seconds to COMMIT when it committed before the kill)."""
    began = time.perf_counter()
    committed = None
    while time.perf_counter() - began < delay:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return time.perf_counter() - began, committed
        ready, _, _ = select.select([read], [], [], 0.002)
        if ready and os.read(read, 1) == b"C" and committed is None:
            committed = time.perf_counter() - began
    os.kill(pid, signal.SIGKILL)
    wait(pid)
    return None, committed


def trial(number: int, operation: str, baseline: Path, work: Path, plan: dict,
          rng: random.Random, shots: int) -> dict:
    """One kill; the operation's expected duration follows the runs that finished first (on a
    loaded machine the unkilled measurement drifts)."""
    folder = fresh_copy(baseline, work / f"trial-{number:04d}")
    _, after, export = plan[operation]
    delay = rng.uniform(0, plan["seconds"][operation])
    if operation == "import-large":   # the kill lands inside the open write transaction
        pid, read = start_reporting(operation, folder, shots)
        committed_after = None
        if wait_for_report(read, b"B") is None:   # it failed before writing: not a kill
            wait(pid)
            finished_after: float | None = 0.0
        else:
            finished_after, committed_after = kill_in_transaction(pid, read, delay)
        os.close(read)
        if committed_after is not None:   # the transaction was shorter than drawn: follow it
            plan["seconds"][operation] = committed_after
    else:
        finished_after = kill_at(start(operation, folder, shots), delay)
        if finished_after is not None:
            plan["seconds"][operation] = finished_after
    result = {"trial": number, "operation": operation, "delay_s": round(delay, 3),
              "killed": finished_after is None}
    if operation == "import-large":
        result["killed_in_transaction"] = finished_after is None and committed_after is None
    result["corrupt"] = corrupt(folder / "people.db")
    result["outcome"], result["half_done"] = (
        ("corrupt", None) if result["corrupt"] else
        judge(operation, folder, plan["before"], after, export))
    result["temporaries_after_kill"] = temporaries(folder)
    result["rerun_exit"] = rerun(operation, folder, shots)
    result["leftover"] = temporaries(folder)
    if operation == "delete":
        result["not_erased"] = not erased(folder, plan["secrets"])
    shutil.rmtree(folder)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=120, help="at least 1 (issue 14: >= 100)")
    parser.add_argument("--people", type=int, default=40, help="people in the baseline gallery")
    parser.add_argument("--enroll-shots", type=int, default=300,
                        help="shots of the enroll operation (one transaction)")
    parser.add_argument("--large-people", type=int, default=1000,
                        help="people (3 shots each) of the large import killed in its transaction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every trial's result here")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.people < 10 or args.enroll_shots < 1:
        parser.error("--trials >= 1, --people >= 10, --enroll-shots >= 1")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gallery-kill-") as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        baseline.mkdir()
        build_baseline(baseline, args.people, args.seed, args.large_people)
        plan = {"before": state(baseline / "people.db"), "secrets": deleted_secrets(baseline)}
        enroll_batch(args.enroll_shots)
        for operation in OPERATIONS:
            plan[operation] = measure(operation, baseline, work, args.enroll_shots)
            print(f"{operation}: {plan[operation][0]:.2f} s unkilled", flush=True)
        plan["seconds"] = {operation: plan[operation][0] for operation in OPERATIONS}
        results = [trial(n, OPERATIONS[n % len(OPERATIONS)], baseline, work, plan, rng,
                         args.enroll_shots) for n in range(args.trials)]
    return report(results, args)


def report(results: list[dict], args: argparse.Namespace) -> int:
    corrupt_ = [r for r in results if r["corrupt"]]
    half = [r for r in results if r["half_done"]]
    leftover = [r for r in results if r["leftover"]]
    unerased = [r for r in results if r.get("not_erased")]
    print("| operation | trials | killed mid-run | left as | corrupt | half-done |"
          " leftover temporaries | not erased after rerun |")
    print("|---|---|---|---|---|---|---|---|")
    for operation in OPERATIONS:
        rows = [r for r in results if r["operation"] == operation]
        count = lambda items: sum(1 for r in items if r["operation"] == operation)  # noqa: E731
        erasure = count(unerased) if operation == "delete" else "-"
        outcomes = {}
        for r in rows:
            if r["killed"]:
                outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        left = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "-"
        print(f"| {operation} | {len(rows)} | {sum(r['killed'] for r in rows)} | {left} | "
              f"{count(corrupt_)} | {count(half)} | {count(leftover)} | {erasure} |")
    killed = sum(r["killed"] for r in results)
    inside = sum(1 for r in results if r.get("killed_in_transaction"))
    large = sum(1 for r in results if r["operation"] == "import-large")
    print(f"import-large: {inside} of {large} trials killed inside the open write transaction "
          "(after BEGIN IMMEDIATE, before COMMIT returned)")
    cleaned = sum(1 for r in results if r["temporaries_after_kill"])
    print(f"{len(results)} trials, {killed} killed mid-run: {len(corrupt_)} corrupt galleries, "
          f"{len(half)} half-done changes, {len(leftover)} with leftover temporaries, "
          f"{len(unerased)} deletions not erased after the rerun ({cleaned} kills left a "
          "temporary that the rerun removed)")
    for r in corrupt_ + half + leftover + unerased:
        print("  problem:", json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if corrupt_ or half or leftover or unerased else 0


if __name__ == "__main__":
    sys.exit(main())
