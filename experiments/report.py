"""Regenerate docs/results.md from the fragments the studies write into docs/results/
(`<study>.md`, with their JSON and PNG files beside them). Every study script calls this at its
end (fragments are outputs: edit the script, not the fragment). Fragments link their images as
`results/<name>.png`, i.e. relative to docs/results.md, the page they end up in.

    python experiments/report.py
"""
from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
ORDER = ["shipped_students", "edge_students", "vit_diagnosis", "lafs_small"]  # known studies first; any other fragment after them

HEADER = """# Results on real faces

Measured, not quoted: each section below is written by the script named in it (experiments/),
from the JSON beside it in docs/results/. Rerun the script to regenerate its section; this page is
then rebuilt by `python experiments/report.py`. Budgets are small (a 2-core CPU unless a section
says otherwise), so read the numbers as what this toolkit's recipes give at that budget, not as
the method's ceiling.
"""


def main() -> None:
    fragments = sorted(RESULTS.glob("*.md"), key=lambda p: (
        ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    body = [HEADER] + [p.read_text().strip() + "\n" for p in fragments]
    if not fragments:
        body.append("No study has been run yet.\n")
    target = RESULTS.parent / "results.md"
    target.write_text("\n".join(body))
    print(f"{target}: {len(fragments)} sections")


if __name__ == "__main__":
    main()
