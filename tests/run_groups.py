"""Run the test suite as a few pytest processes, one per area, and sum the results.

Why: the native runtimes that the device and conversion tests load (LiteRT/XNNPACK, OpenVINO,
ONNX Runtime) and the training tests' forked DataLoader workers crashed one long pytest process
here (SIGSEGV in a training test after the device tests; each area alone passes). Separate
processes keep each area's native state apart. Every tests/test_*.py runs: files not named in a
group run in a last group of their own.

    python tests/run_groups.py [pytest args...]
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
GROUPS = {
    "models, CLI, data, evaluation": ["test_sampler.py", "test_models.py", "test_cli.py",
                                      "test_data_*.py", "test_eval_*.py"],
    "training": ["test_train_*.py", "test_lafs*.py", "test_finetune_distill.py"],
    "device": ["test_landmarks_*.py", "test_gallery_*.py", "test_embedder_*.py",
               "test_device_cli.py", "test_demo.py", "test_adapt.py"],
    "conversion": ["test_convert_*.py", "test_runtime_*.py"],
    "quickstart": ["test_quickstart.py"],
}


def main(extra: list[str]) -> int:
    seen: set[Path] = set()
    plan = []
    for name, patterns in GROUPS.items():
        files = sorted({f for p in patterns for f in TESTS.glob(p)} - seen)
        seen |= set(files)
        plan.append((name, files))
    plan.append(("other", sorted(set(TESTS.glob("test_*.py")) - seen)))
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed_groups = []
    for name, files in plan:
        if not files:
            continue
        print(f"\n=== {name}: {len(files)} files ===", flush=True)
        proc = subprocess.run([sys.executable, "-m", "pytest", *extra, *map(str, files)],
                              stdout=subprocess.PIPE, text=True)
        sys.stdout.write(proc.stdout)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        for count, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
            totals["error" if word.startswith("error") else word] += int(count)
        if proc.returncode != 0:
            failed_groups.append(f"{name} (exit {proc.returncode})")
            if not re.search(r"\d+ failed", summary):  # a crash: count it as a failure
                totals["failed"] += 1
    print(f"\n=== groups failed: {', '.join(failed_groups) or 'none'} ===")
    print(f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
          f"{totals['skipped']} skipped")
    return 1 if failed_groups else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
