"""How long `lafs-edge --help` and `lafs-edge models --help` take from a fresh interpreter, and
whether they imported torch (they must not: `lafs_edge/__init__` loads the model functions on
first use, and every command module imports its heavy dependencies inside `run`).

    python benchmarks/cli_startup.py [--runs 10] [--json benchmarks/results/cli_startup.json]

`import torch` alone is timed the same way beside them, as the reference: what each `--help`
would cost on top if the package imported torch.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"lafs-edge --help": ["--help"], "lafs-edge models --help": ["models", "--help"]}
# Runs the real entry point, then reports whether torch was imported (on stderr, after the help).
PROBE = ("import sys\nfrom lafs_edge.cli import main\ntry:\n    main(sys.argv[1:])\n"
         "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")


def seconds(argv: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": runs}


def imports_torch(args: list[str]) -> bool:
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    return result.stderr.strip().splitlines()[-1] == "True"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [{"command": name, **seconds([sys.executable, "-m", "lafs_edge.cli", *argv], args.runs),
             "imports_torch": imports_torch(argv)} for name, argv in COMMANDS.items()]
    rows.append({"command": "python -c 'import torch' (reference)",
                 **seconds([sys.executable, "-c", "import torch"], args.runs), "imports_torch": True})
    print("| command | median s | min s | imports torch |\n|---|---|---|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f} | "
              f"{'yes' if r['imports_torch'] else 'no'} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
