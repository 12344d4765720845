"""Issue 14 regressions at the library level: what a hostile or careless user broke in the
gallery (imports, exports, erasure, names, read-only files, files that are not galleries)."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.gallery import Gallery, Shot, person_match

MODEL_A = "a" * 64


def unit(seed: int, dim: int = 64) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def test_person_match_scores_new_shots_against_the_person(tmp_path):
    with Gallery(tmp_path / "g.db") as gallery:
        gallery.enroll("ann", [Shot(unit(1)), Shot(unit(2))], MODEL_A)
        assert person_match(gallery, "nobody", unit(1)[None]) is None
        assert person_match(gallery, "ann", unit(2) * 5) == pytest.approx(1.0, abs=1e-5)
        stranger = person_match(gallery, "ann", np.stack([unit(3), unit(4)]))
        assert stranger < 0.5
