"""`lafs-edge models`: the registry with parameter counts, GFLOPs at 112x112, and which models
ship trained weights (`create_model(name, pretrained=True)`)."""
from __future__ import annotations

import argparse
import json
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from lafs_edge.models import (count_flops, count_parameters, create_model, list_models,
                                  model_description)
    from lafs_edge.models.pretrained import shipped

    weights = shipped()

    rows: list[dict[str, Any]] = []
    for name in list_models():
        model = create_model(name)
        rows.append({"name": name, "parameters": count_parameters(model),
                     "gflops": round(count_flops(model) / 1e9, 3),
                     "embedding_dim": model.embedding_dim,
                     "weights": weights[name]["card"] if name in weights else None,
                     "description": model_description(name)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'params (M)':>10} {'GFLOPs':>8} {'dim':>5} {'weights':>8}  description")
    for r in rows:
        print(f"{r['name']:<16} {r['parameters'] / 1e6:>10.2f} {r['gflops']:>8.2f} "
              f"{r['embedding_dim']:>5} {'trained' if r['weights'] else '-':>8}  {r['description']}")
    print("weights: trained = shipped with the package (create_model(name, pretrained=True)); "
          "model cards in lafs_edge/weights/.")
    print("GFLOPs: 2 x multiply-accumulates of one 112x112 forward pass (torch FlopCounterMode).")
    return 0
