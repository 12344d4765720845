"""Run the test suite as a few pytest processes, one per group of areas, and sum the results.

Each test file declares its area (`pytestmark = pytest.mark.<area>`, listed in pyproject.toml;
tests/conftest.py refuses a file without one), and a group is a `-m` expression over areas.

Why a few processes: one process over the whole suite used to die with SIGSEGV. OpenVINO's CPU
plugin (2026.4.1) points the calling thread's alternate signal stack (sigaltstack) at a buffer of
each Core that compiles a model and, when that Core is freed, unmaps it and restores the stack it
found; Cores freed in creation order left the main thread's stack dangling, and the next signal
with a Python handler (torch DataLoader's SIGCHLD once it has started workers) killed the
process before faulthandler could print anything. lafs_edge/runtime/openvino.py now shares one
Core per process (tests/test_embedder_runtimes.py holds the regression test), which fixed it;
the groups stay so that each area's native runtimes (OpenVINO, LiteRT/XNNPACK, ONNX Runtime) and
forked workers live apart, and an area can be rerun alone (`pytest -m device`).

    python tests/run_groups.py [pytest args...]
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS = {
    "models, CLI, data, evaluation": "models or cli or data or evaluation",
    "training": "training",
    "device": "device",
    "conversion": "conversion",
    "quickstart": "quickstart",
}
# An area no group names still runs, in a last process of its own.
GROUPS["other areas"] = "not (" + " or ".join(GROUPS.values()) + ")"
NOTHING_SELECTED = 5  # pytest's exit code when -m leaves no test


def main(extra: list[str]) -> int:
    totals = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    failed_groups = []
    for name, expression in GROUPS.items():
        print(f"\n=== {name}: -m '{expression}' ===", flush=True)
        command = [sys.executable, "-m", "pytest", "-m", expression, *extra]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO)  # testpaths
        sys.stdout.write(proc.stdout)
        summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        for count, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary):
            totals["error" if word.startswith("error") else word] += int(count)
        if proc.returncode not in (0, NOTHING_SELECTED):
            failed_groups.append(f"{name} (exit {proc.returncode})")
            if not re.search(r"\d+ failed", summary):  # a crash: count it as a failure
                totals["failed"] += 1
    print(f"\n=== groups failed: {', '.join(failed_groups) or 'none'} ===")
    print(f"{totals['passed']} passed, {totals['failed'] + totals['error']} failed, "
          f"{totals['skipped']} skipped")
    return 1 if failed_groups else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
