"""What the exported graphs contain: BatchNorm folded into the convolutions, no grid_sample for
the part fViT sampler, and the same embeddings as the PyTorch model they came from."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lafs_edge.convert.export import ExportModel, fuse_batchnorm
from lafs_edge.convert.pipeline import export_models
from lafs_edge.models import load_model
from lafs_edge.runtime.backends import open_runtime

pytestmark = pytest.mark.conversion

TINY_VIT = dict(preset="test")  # lafs_edge.models.registry.PRESETS


def _faces(count=4, seed=0):
    return torch.zeros(count, 3, 112, 112).uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))


def _with_real_batchnorm(model):
    """Non-trivial BatchNorm statistics, so folding has something to get right."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.uniform_(-0.2, 0.2, generator=gen)
    return model.eval()


@pytest.mark.parametrize("name,overrides", [("mobilefacenet", {}), ("part_fvit_tiny", TINY_VIT)])
def test_folding_batchnorm_keeps_the_embeddings(name, overrides):
    torch.manual_seed(0)
    model = _with_real_batchnorm(load_model(name, **overrides))
    fused = fuse_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # source untouched
    x = _faces()
    with torch.no_grad():
        torch.testing.assert_close(ExportModel(fused)(x), model(x), atol=1e-4, rtol=1e-4)
    # parameter names of the source are untouched: its checkpoints still load
    assert set(model.state_dict()) == set(load_model(name, **overrides).state_dict())


@pytest.mark.slow
def test_onnx_mobilefacenet_has_no_batchnorm_and_matches(tmp_path):
    import onnx

    (folder, _), = export_models("mobilefacenet", ["onnx"], "fp32", tmp_path, random_init=True)
    graph = onnx.load(str(folder / "model.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    torch.manual_seed(0)  # registry exports use seed 0
    model = load_model("mobilefacenet").eval()
    x = _faces()
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(open_runtime(folder).run(x.numpy()), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_openvino_part_fvit_graph_has_no_grid_sample(tmp_path):
    import openvino as ov

    (folder, _), = export_models("part_fvit_tiny", ["openvino"], "fp32", tmp_path, overrides=TINY_VIT,
                                   random_init=True)
    types = {op.get_type_name() for op in ov.Core().read_model(str(folder / "model.xml")).get_ops()}
    assert "GridSample" not in types and {"GatherElements", "Gather"} & types
    torch.manual_seed(0)
    model = load_model("part_fvit_tiny", **TINY_VIT).eval()
    x = _faces(seed=3)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(open_runtime(folder).run(x.numpy()), expected, rtol=1e-3, atol=1e-4)
