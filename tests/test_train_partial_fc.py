"""Partial FC against independent references: the full MarginHead, a direct softmax over the
sampled centres, and (2 gloo processes) the sharded head against one process with all centres."""
from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lafs_edge.models import MarginHead, margin_logits
from lafs_edge.train.partial_fc import (MarginLoss, PartialFC, build_margin_loss, seeded_centres,
                                        shard_range)

pytestmark = pytest.mark.training

DIM, CLASSES, BATCH = 16, 37, 12


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(BATCH, DIM, generator=g)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
    return emb, labels


@pytest.mark.parametrize("kind", ["cosface", "arcface"])
def test_full_rate_partial_fc_equals_margin_head(kind):
    emb, labels = _batch()
    pfc = PartialFC(DIM, CLASSES, kind, scale=64.0, sample_rate=1.0, seed=3)
    head = MarginHead(DIM, CLASSES, kind, scale=64.0)
    with torch.no_grad():
        head.weight.copy_(pfc.weight)
    e1, e2 = emb.clone().requires_grad_(), emb.clone().requires_grad_()
    loss_pfc = pfc(e1, labels)
    loss_ref = F.cross_entropy(head(e2, labels), labels)
    loss_pfc.backward()
    loss_ref.backward()
    assert torch.allclose(loss_pfc, loss_ref, atol=1e-5)
    assert torch.allclose(e1.grad, e2.grad, atol=1e-6)
    assert torch.allclose(pfc.weight.grad, head.weight.grad, atol=1e-6)


def test_mixed_targets_weight_the_two_losses():
    emb, labels = _batch(1)
    partner = torch.randperm(BATCH, generator=torch.Generator().manual_seed(0))
    weight = torch.full((BATCH,), 0.3)
    pfc = PartialFC(DIM, CLASSES, "cosface", sample_rate=1.0)
    head = MarginHead(DIM, CLASSES, "cosface")
    with torch.no_grad():
        head.weight.copy_(pfc.weight)
    expected = (0.3 * F.cross_entropy(head(emb, labels), labels, reduction="none")
                + 0.7 * F.cross_entropy(head(emb, labels[partner]), labels[partner],
                                        reduction="none")).mean()
    assert torch.allclose(pfc(emb, labels, partner, weight), expected, atol=1e-5)
    margin = MarginLoss(DIM, CLASSES, "cosface")
    with torch.no_grad():
        margin.head.weight.copy_(pfc.weight)
    assert torch.allclose(margin(emb, labels, partner, weight), expected, atol=1e-5)


def test_sampled_centres_keep_every_positive_and_match_a_direct_softmax():
    emb, labels = _batch(2)
    pfc = PartialFC(DIM, CLASSES, "cosface", scale=64.0, sample_rate=0.5, seed=1)
    torch.manual_seed(5)
    loss = pfc(emb, labels)
    torch.manual_seed(5)
    index = pfc.sample([labels])
    assert index.numel() == pfc.num_sample == 18
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index, index.sort().values)
    cosine = F.normalize(emb) @ F.normalize(pfc.weight[index]).T
    column = torch.tensor([index.tolist().index(c) for c in labels.tolist()])
    expected = F.cross_entropy(margin_logits(cosine, column, "cosface", 64.0, 0.4), column)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_more_positives_than_the_sample_size_uses_the_positives():
    labels = torch.arange(10)
    pfc = PartialFC(DIM, 20, sample_rate=0.1)
    assert torch.equal(pfc.sample([labels]), torch.arange(10))


def test_centres_do_not_depend_on_the_number_of_shards():
    full = seeded_centres(0, 10000, 4, seed=7)
    parts = [seeded_centres(*shard_range(10000, r, 3), 4, seed=7) for r in range(3)]
    assert [p.shape[0] for p in parts] == [3334, 3333, 3333]
    assert torch.equal(torch.cat(parts), full)


def test_head_choice_follows_the_threshold():
    cfg = {"kind": "arcface", "scale": 64.0, "margin": None, "partial_fc_above": 100,
           "sample_rate": 0.3}
    assert isinstance(build_margin_loss(8, 100, cfg, 0)[0], MarginLoss)
    pfc, sharded = build_margin_loss(8, 101, cfg, 0)
    assert sharded and isinstance(pfc, PartialFC) and pfc.margin == 0.5
    with pytest.raises(ValueError, match="cosface or arcface"):
        build_margin_loss(8, 10, {**cfg, "kind": "softmax"}, 0)


def _sharded_worker(rank: int, init_file: str, emb: torch.Tensor, labels: torch.Tensor,
                    results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        local = emb[rank * 6:(rank + 1) * 6].clone().requires_grad_()
        pfc = PartialFC(DIM, CLASSES, "arcface", sample_rate=1.0, seed=3)
        loss = pfc(local, labels[rank * 6:(rank + 1) * 6])
        loss.backward()
        results[rank] = (loss.detach(), local.grad, pfc.weight.grad)
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_sharded_centres_equal_one_full_head(tmp_path):
    """Each rank holds half the centres and half the batch. The loss is the full-softmax mean
    over the global batch; the embedding gradient is world x d(loss)/d(emb) (DDP then averages
    it over ranks); the centre gradients are the full head's, split by shard."""
    emb, labels = _batch(4)
    results = mp.Manager().dict()
    mp.spawn(_sharded_worker, args=(str(tmp_path / "init"), emb, labels, results), nprocs=2)
    head = MarginHead(DIM, CLASSES, "arcface")
    with torch.no_grad():
        head.weight.copy_(seeded_centres(0, CLASSES, DIM, seed=3))
    full = emb.clone().requires_grad_()
    ref = F.cross_entropy(head(full, labels), labels)
    ref.backward()
    for rank in range(2):
        loss, emb_grad, weight_grad = results[rank]
        assert torch.allclose(loss, ref, atol=1e-5)
        assert torch.allclose(emb_grad, 2 * full.grad[rank * 6:(rank + 1) * 6], atol=1e-6)
        start, stop = shard_range(CLASSES, rank, 2)
        assert torch.allclose(weight_grad, head.weight.grad[start:stop], atol=1e-6)
