"""Every registered model: forward, backward, torch.export with a dynamic batch, ONNX Runtime parity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lafs_edge.models import (ArcFace, CosFace, DINOHead, count_parameters, create_model,
                              list_models, load_model, save_checkpoint, set_fused_attention)
from lafs_edge.models.mobilenetv3 import MobileNetV3Trunk
from lafs_edge.models.registry import PRESETS

pytestmark = pytest.mark.models

MODELS = list_models()
# Every registered model, plus the landmark read-out the shipped part_fvit_tiny uses.
VARIANTS = [(name, {}) for name in MODELS] + [("part_fvit_tiny", {"pool": "landmarks"})]


@pytest.fixture(scope="module", params=VARIANTS,
                ids=[name + "".join(f"-{k}={v}" for k, v in o.items()) for name, o in VARIANTS])
def model(request):
    torch.manual_seed(0)
    name, overrides = request.param
    return create_model(name, **overrides).eval()


def _faces(batch, seed=0):
    return torch.rand(batch, 3, 112, 112, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registry_lists_the_models():
    assert {"part_fvit_base", "part_fvit_small", "part_fvit_tiny", "mobilefacenet"} <= set(MODELS)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet9000")
    with pytest.raises(ValueError, match="bad override"):
        create_model("part_fvit_tiny", widthh=3)


def test_a_preset_sits_under_the_callers_overrides_and_checkpoints_resolve_it(tmp_path):
    model = create_model("part_fvit_tiny", preset="test", depth=2)
    assert model.arch_config == {**PRESETS["test"], "depth": 2}
    assert model.embedding_dim == PRESETS["test"]["dim"] and len(model.blocks) == 2
    save_checkpoint(model, tmp_path / "model.pt")
    assert load_model(tmp_path / "model.pt").arch_config == model.arch_config
    with pytest.raises(ValueError, match="unknown preset 'huge'; registered: test"):
        create_model("part_fvit_tiny", preset="huge")


def test_forward_and_backward(model):
    model.train()
    images = _faces(2).requires_grad_(True)
    out = model(images)
    assert out.shape == (2, model.embedding_dim) and torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if hasattr(model, "landmarks"):  # the landmark CNN learns through the sampler
        assert model.landmarks.head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.eval()


def test_torch_export_dynamic_batch(model):
    batch = torch.export.Dim("batch", min=1, max=128)
    program = torch.export.export(model, (_faces(2),), dynamic_shapes=({0: batch},))
    x = _faces(3, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=1e-5)


def test_onnx_export_matches_onnxruntime(model, tmp_path):
    import onnxruntime as ort

    set_fused_attention(model, False)
    path = tmp_path / "model.onnx"
    try:
        torch.onnx.export(model, (_faces(2),), str(path), input_names=["images"],
                          output_names=["embedding"], dynamic_shapes={"images": {0: "batch"}},
                          dynamo=True, verbose=False)
    finally:
        set_fused_attention(model, True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _faces(3, seed=2)
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def _reference_part_fvit_parameters(n=196, patch=8, dim=768, depth=12, heads=11, head_dim=64,
                                    mlp=2048) -> int:
    """Counted by hand from the reference architecture (docs/architecture.md, "The method"): a ViT over 196
    landmark tokens (vit-pytorch layout: bias-free qkv, projection with bias, pre-norm blocks) and
    a MobileNetV3-Large landmark CNN whose trunk ends at 160 channels, + Linear(160, 2N)."""
    inner = heads * head_dim
    block = 2 * (2 * dim) + dim * 3 * inner + (inner * dim + dim) + (dim * mlp + mlp) + (mlp * dim + dim)
    vit = (3 * patch * patch * dim + dim) + (n + 1) * dim + dim + depth * block + 2 * dim
    # MobileNetV3-Large trunk to 160 channels: torchvision's mobilenet_v3_large has 5,483,032
    # parameters; minus its classifier (960*1280+1280 + 1280*1000+1000 = 2,511,080) and the final
    # 1x1 conv 160->960 with BN (153,600 + 1,920) leaves 2,816,432.
    landmark_cnn = 2_816_432 + 160 * 2 * n + 2 * n
    return vit + landmark_cnn


def test_part_fvit_base_parameter_count_matches_reference():
    ours = count_parameters(create_model("part_fvit_base"))
    reference = _reference_part_fvit_parameters()
    assert abs(ours - reference) / reference < 0.05, (ours, reference)
    assert count_parameters(MobileNetV3Trunk("large")) == 2_816_432


def test_mobilefacenet_is_about_one_million_parameters():
    assert 0.9e6 < count_parameters(create_model("mobilefacenet")) < 1.2e6


def test_landmarks_are_rescaled_into_the_crop():
    model = create_model("part_fvit_tiny").eval()
    with torch.no_grad():
        _, points, patches = model.forward_with_landmarks(_faces(4))
    assert points.shape == (4, 100, 2) and patches.shape == (4, 100, 3, 8, 8)
    assert points.min() >= 0 and points.max() <= 111 + 1e-4
    assert torch.allclose(points.flatten(1).amax(1), torch.full((4,), 111.0), atol=1e-3)


def test_encode_patches_with_shuffled_landmark_ids_uses_their_positions():
    model = create_model("part_fvit_tiny", depth=1).eval()
    with torch.no_grad():
        _, _, patches = model.forward_with_landmarks(_faces(2))
        ids = torch.randint(0, 100, (2, 36))
        subset = torch.gather(patches, 1, ids[:, :, None, None, None].expand(-1, -1, 3, 8, 8))
        a = model.encode_patches(subset, ids)
        # the same tokens in another order give the same class-token embedding (no causal order)
        perm = torch.randperm(36)
        b = model.encode_patches(subset[:, perm], ids[:, perm])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fused_and_explicit_attention_agree():
    model = create_model("part_fvit_tiny").eval()
    x = _faces(2)
    with torch.no_grad():
        fused = model(x)
        set_fused_attention(model, False)
        explicit = model(x)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_checkpoint_roundtrip_with_weights_only(tmp_path):
    model = create_model("part_fvit_tiny", depth=2)
    path = tmp_path / "tiny.pt"
    save_checkpoint(model, path, step=7)
    assert torch.load(path, weights_only=True)["step"] == 7
    loaded = load_model(path)
    x = _faces(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable"):
        load_model(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="not a lafs-edge checkpoint"):
        load_model(plain)


def _reference_arcface_logit(cos, margin, scale):
    theta = np.arccos(np.clip(cos, -1, 1))
    return scale * np.cos(theta + margin)


def test_margin_heads_against_direct_formulas():
    torch.manual_seed(0)
    emb = torch.randn(6, 16)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    for head_cls, margin in [(CosFace, 0.4), (ArcFace, 0.5)]:
        head = head_cls(16, 5)
        logits = head(emb, labels)
        cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(head.weight).T
        expected = cos.clone() * 64
        for i, y in enumerate(labels.tolist()):
            c = cos[i, y].item()
            if head_cls is CosFace:
                expected[i, y] = 64 * (c - margin)
            elif np.arccos(c) + margin <= np.pi:
                expected[i, y] = _reference_arcface_logit(c, margin, 64)
        torch.testing.assert_close(logits, expected, atol=1e-3, rtol=1e-4)
        logits.sum().backward()
        assert torch.isfinite(head.weight.grad).all()


def test_arcface_gradient_is_finite_at_cosine_one():
    head = ArcFace(4, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
    emb = torch.tensor([[1.0, 0, 0, 0]], requires_grad=True)
    head(emb, torch.tensor([0])).sum().backward()
    assert torch.isfinite(emb.grad).all()


def test_dino_head_shapes_and_frozen_norm():
    head = DINOHead(64, out_dim=1000, hidden_dim=128, bottleneck_dim=32)
    out = head(torch.randn(3, 64))
    assert out.shape == (3, 1000)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)


def test_untrained_landmarks_form_an_even_grid_whatever_the_image():
    """The landmark CNN starts as a grid spanning the crop (then training moves the points)."""
    torch.manual_seed(0)
    model = create_model("part_fvit_tiny").eval()
    points = model.landmarks(torch.rand(3, 3, 112, 112) * 2 - 1)
    ticks = torch.linspace(0, 111, 10)
    expected = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(100, 2)
    assert torch.allclose(points, expected.expand(3, -1, -1), atol=0.5)


def test_landmark_read_out_uses_each_landmarks_own_map():
    """pool='landmarks': the full set equals the flattened linear map; a subset of landmarks
    (LAFS local views) uses exactly those landmarks' maps, rescaled by N / n."""
    torch.manual_seed(0)
    model = create_model("part_fvit_tiny", pool="landmarks", depth=1).eval()
    n, r = model.num_landmarks, model.pool_reduce.out_features
    tokens = torch.randn(2, n, model.embedding_dim)
    full = model.pool_landmarks(tokens, None)
    same = model.pool_landmarks(tokens, torch.arange(n).expand(2, n))
    torch.testing.assert_close(full, same, atol=1e-5, rtol=1e-5)
    ids = torch.tensor([[3, 7, 7], [0, 99, 50]])
    subset = tokens[:, :3]
    reduced = model.pool_reduce(subset)
    weight = model.pool_proj.weight.t().reshape(n, r, -1)
    expected = torch.stack([sum(reduced[b, i] @ weight[ids[b, i]] for i in range(3))
                            for b in range(2)]) * (n / 3) + model.pool_proj.bias
    torch.testing.assert_close(model.pool_landmarks(subset, ids), model.pool_norm(expected),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs all 100 landmarks"):
        model.pool_landmarks(subset, None)
    with pytest.raises(ValueError, match="unknown pool"):
        create_model("part_fvit_tiny", pool="mean")


def test_keep_landmarks_is_the_models_own_landmark_subset_path():
    """A cut to n landmarks computes what the full model computes on those landmarks' patches
    through its LAFS subset path (landmark ids, N / n rescaled read-out), when the cut keeps the
    landmarks that hold the landmark CNN's per-image extremes (the min-max rescale's anchors)."""
    from lafs_edge.models.part_vit import keep_landmarks
    from lafs_edge.models.sampler import sample_patches

    torch.manual_seed(0)
    full = create_model("part_fvit_tiny", preset="test", pool="landmarks").eval()
    with torch.no_grad():   # spread the head so the layout differs per image
        full.landmarks.head.weight.normal_(0, 0.5)
    image = torch.rand(1, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        raw = full.landmarks.head(full.landmarks.trunk(image).mean((2, 3)))
        anchors = {int(raw.argmin()) // 2, int(raw.argmax()) // 2}
        keep = sorted(anchors | {1, 4, 6, 9, 12, 15})
        small = keep_landmarks(full, keep).eval()
        emb, points, _ = small.forward_with_landmarks(image)
        full_points = full.landmarks(image)
        ids = torch.tensor([keep])
        patches = sample_patches(image, full_points[:, keep], full.patch_size, full.sampler)
        reference = full.encode_patches(patches, landmark_ids=ids)
    assert small.num_landmarks == len(keep) and small.arch_config["num_landmarks"] == len(keep)
    torch.testing.assert_close(points, full_points[:, keep], atol=1e-4, rtol=0)
    torch.testing.assert_close(emb, reference, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="distinct"):
        keep_landmarks(full, [0, 0, 1])


def test_recalibrated_batchnorm_holds_the_statistics_of_the_given_data():
    """After recalibration each BN layer's running mean/var are those of its input over the given
    batches (computed here directly from the layer's input), whatever they were before."""
    from lafs_edge.models.batchnorm import recalibrate_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2))
    net.train()
    for _ in range(20):   # stale statistics from other data
        net(torch.randn(8, 3, 10, 10) * 3 + 5)
    batches = [torch.randn(6, 3, 10, 10) for _ in range(3)]
    assert recalibrate_batchnorm(net, batches) == 2
    assert not net.training and net[1].momentum == 0.1
    with torch.no_grad():
        first = torch.cat([net[0](b) for b in batches])
    torch.testing.assert_close(net[1].running_mean, first.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    # the cumulative average of per-batch unbiased variances (equal-sized batches)
    per_batch = torch.stack([net[0](b).detach().var((0, 2, 3), unbiased=True) for b in batches])
    torch.testing.assert_close(net[1].running_var, per_batch.mean(0), atol=1e-5, rtol=1e-5)
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batchnorm(net, iter([]))
    assert torch.equal(net[1].running_mean, before)   # nothing reset on a refusal
