"""`lafs-edge models`: the registry with parameter counts and GFLOPs at 112x112."""
from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..models import count_flops, count_parameters, create_model, list_models, model_description

    rows = []
    for name in list_models():
        model = create_model(name)
        rows.append({"name": name, "parameters": count_parameters(model),
                     "gflops": round(count_flops(model) / 1e9, 3),
                     "embedding_dim": model.embedding_dim, "description": model_description(name)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'params (M)':>10} {'GFLOPs':>8} {'dim':>5}  description")
    for r in rows:
        print(f"{r['name']:<16} {r['parameters'] / 1e6:>10.2f} {r['gflops']:>8.2f} "
              f"{r['embedding_dim']:>5}  {r['description']}")
    print("GFLOPs: 2 x multiply-accumulates of one 112x112 forward pass (torch FlopCounterMode).")
    return 0
