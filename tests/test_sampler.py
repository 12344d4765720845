"""The batched patch samplers against the reference: one grid_sample call per landmark."""
from __future__ import annotations

import pytest
import torch

from lafs_edge.models import sample_patches, sample_patches_reference
from lafs_edge.models.sampler import _sample_gather, gather_form

pytestmark = pytest.mark.models

# Every implementation behind the public methods: the default "gather" runs the export form when
# traced/exported and grid_sample in eager mode.
FORMS = {
    "gather": lambda i, p, s: sample_patches(i, p, s, "gather"),
    "grid_sample": lambda i, p, s: sample_patches(i, p, s, "grid_sample"),
    "gather export form": lambda i, p, s: _sample_gather(i, p, s),
}


def _inputs(b=3, c=3, h=112, w=112, n=40, seed=0, spread=(-12.0, 124.0)):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(b, c, h, w, generator=gen) * 2 - 1
    lo, hi = spread
    scale = torch.tensor([w, h]) / 112
    points = (lo + torch.rand(b, n, 2, generator=gen) * (hi - lo)) * scale
    return images.double().float(), points


CASES = {
    "inside": dict(spread=(10.0, 100.0)),
    "near and outside borders": dict(spread=(-12.0, 124.0)),
    "far outside": dict(spread=(-60.0, 180.0)),
    "non-square 80x120": dict(h=80, w=120),
    "one channel": dict(c=1),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("size", [8, 5])
def test_values_match_reference(form, case, size):
    images, points = _inputs(**CASES[case])
    expected = sample_patches_reference(images, points, size)
    got = FORMS[form](images, points, size)
    assert got.shape == expected.shape == (images.shape[0], points.shape[1], images.shape[1], size, size)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_integer_landmarks_and_exact_pixel_values():
    """With x = col + size/2 + 0.5 the patch is a plain crop of the image: no interpolation."""
    images = torch.arange(2 * 3 * 20 * 30, dtype=torch.float32).reshape(2, 3, 20, 30)
    points = torch.tensor([[[10.0 + 4.5, 6.0 + 4.5]], [[0.0 + 4.5, 0.0 + 4.5]]])
    got = sample_patches(images, points, 8)
    torch.testing.assert_close(got[0, 0], images[0, :, 6:14, 10:18])
    torch.testing.assert_close(got[1, 0], images[1, :, 0:8, 0:8])


@pytest.mark.parametrize("form", ["gather", "grid_sample", "gather export form"])
@pytest.mark.parametrize("case", ["inside", "near and outside borders", "non-square 80x120"])
def test_gradients_match_reference(form, case):
    images, points = _inputs(**CASES[case], seed=1)
    weights = torch.randn(images.shape[0], points.shape[1], images.shape[1], 8, 8,
                          generator=torch.Generator().manual_seed(2))
    grads = {}
    for name, fn in [("ref", lambda i, p: sample_patches_reference(i, p, 8)),
                     ("got", lambda i, p: FORMS[form](i, p, 8))]:
        im = images.clone().requires_grad_(True)
        pt = points.clone().requires_grad_(True)
        (fn(im, pt) * weights).sum().backward()
        grads[name] = (im.grad, pt.grad)
    torch.testing.assert_close(grads["got"][0], grads["ref"][0], atol=1e-4, rtol=0)
    torch.testing.assert_close(grads["got"][1], grads["ref"][1], atol=1e-4, rtol=0)


def test_form_follows_what_the_caller_does():
    """Eager calls (training, inference) get grid_sample, tracers and exporters the plain gather:
    chosen by the call itself, not by a setting."""
    images, points = _inputs()
    assert gather_form(images, points) == "grid_sample"
    assert gather_form(images, points.requires_grad_(True)) == "grid_sample"
    with torch.no_grad():
        assert gather_form(images, points) == "grid_sample"
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, images, points):
            seen.append(gather_form(images, points))
            return sample_patches(images, points, 8)

    torch.jit.trace(Probe(), (images, points.detach()), check_trace=False)
    torch.export.export(Probe(), (images, points.detach()))
    assert seen == ["export", "export"]


def test_exported_graphs_have_no_grid_sample():
    class Sampler(torch.nn.Module):
        def forward(self, images, points):
            return sample_patches(images, points, 8)

    images, points = _inputs()
    points.requires_grad_(True)  # even when the points carry gradients (a model's landmarks)
    traced = torch.jit.trace(Sampler(), (images, points), check_trace=False)
    kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    assert "aten::gather" in kinds and not any("grid_sampler" in k for k in kinds)
    assert not any(k in kinds for k in ("aten::as_strided", "aten::lerp"))
    exported = torch.export.export(Sampler(), (images, points.detach()))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("grid_sample" in t for t in targets) and any("gather" in t for t in targets)
    torch.testing.assert_close(traced(images, points), sample_patches_reference(images, points, 8),
                               atol=1e-5, rtol=0)


def test_torch_export_with_dynamic_batch():
    class Sampler(torch.nn.Module):
        def forward(self, images, points):
            return sample_patches(images, points, 8)

    batch = torch.export.Dim("batch", min=1, max=256)
    images, points = _inputs(b=2)
    program = torch.export.export(Sampler(), (images, points),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    images5, points5 = _inputs(b=5, seed=3)
    torch.testing.assert_close(program.module()(images5, points5),
                               sample_patches_reference(images5, points5, 8), atol=1e-5, rtol=0)


def test_bad_shapes_and_method_are_refused():
    images, points = _inputs()
    with pytest.raises(ValueError, match="points"):
        sample_patches(images, points[..., :1], 8)
    with pytest.raises(ValueError, match="unknown sampler method"):
        sample_patches(images, points, 8, "nearest")
