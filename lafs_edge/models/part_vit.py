"""Part fViT (Sun & Tzimiropoulos, BMVC 2022): a ViT whose tokens are patches cut around
landmarks that a small CNN predicts, end to end.

    images -> LandmarkCNN -> points (B, N, 2) -> sample_patches -> (B, N, 3*P*P) tokens
           -> linear embedding + class token + position embedding (one per landmark identity)
           -> pre-norm blocks -> LayerNorm(class token) = the embedding

`encode_patches` takes patches with the identity of each landmark, so LAFS local views (a
shuffled subset of landmarks, drawn with replacement) reuse the same position embeddings.

Read-out (`pool`): "cls" is the paper's (LayerNorm of the class token). "landmarks" gives every
landmark token its own linear map into the embedding (each token -> `pool_dim` values -> one
weight matrix per landmark identity, summed): what MobileFaceNet's global depthwise conv does for
a CNN on aligned faces. Why: at initialisation attention is near uniform, so the class token is
almost the same for every face (0.99 alike) and the loss reaches each patch only through that
average; distillation then stalls at the teacher's mean direction (docs/results.md, "Why the
part fViT student did not learn"). With one map per landmark every token gets its own gradient
from the first step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lafs_edge.models.base import FaceModel
from lafs_edge.models.landmark_cnn import LandmarkCNN
from lafs_edge.models.sampler import sample_patches


def drop_path(x: torch.Tensor, prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the residual branch for whole samples."""
    if prob == 0.0 or not training:
        return x
    keep = 1 - prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention. `fused` uses scaled_dot_product_attention (flash kernels on
    GPU); the explicit matmul-softmax form is numerically the same and is what exporters see."""

    fused = True

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            out = attn.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PartViT(FaceModel):
    def __init__(self, num_landmarks: int = 196, patch_size: int = 8, dim: int = 768,
                 depth: int = 12, heads: int = 11, head_dim: int = 64, mlp_dim: int = 2048,
                 drop_path: float = 0.1, landmark_trunk: str = "large", image_size: int = 112,
                 landmark_dropout: float = 0.5, sampler: str = "gather", pool: str = "cls",
                 pool_dim: int = 16):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose from {POOLS}")
        self.num_landmarks, self.patch_size, self.image_size = num_landmarks, patch_size, image_size
        self.embedding_dim = dim
        self.sampler = sampler
        self.landmarks = LandmarkCNN(num_landmarks, landmark_trunk, image_size, landmark_dropout)
        self.patch_embed = nn.Linear(3 * patch_size * patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # One position per landmark identity (+1 for the class token at index 0).
        self.pos_embed = nn.Parameter(torch.zeros(1, num_landmarks + 1, dim))
        # torch.linspace(0, drop_path, depth) in plain floats: the registry builds the model on
        # the meta device to count its parameters, where a tensor's values cannot be read.
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, heads, head_dim, mlp_dim, r) for r in rates)
        self.norm = nn.LayerNorm(dim)
        self.pool = pool
        if pool == "landmarks":
            self.pool_reduce = nn.Linear(dim, pool_dim)
            # (N * pool_dim, dim): row block n is landmark n's map into the embedding.
            self.pool_proj = nn.Linear(num_landmarks * pool_dim, dim)
            self.pool_norm = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in [self.patch_embed, *self.blocks]:
            m.apply(_init_vit)
        if pool == "landmarks":
            nn.init.trunc_normal_(self.pool_reduce.weight, std=dim**-0.5)
            nn.init.zeros_(self.pool_reduce.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> embeddings (B, dim), not L2-normalised."""
        return self.forward_with_landmarks(images)[0]

    def forward_with_landmarks(self, images: torch.Tensor):
        """-> (embedding (B, dim), landmarks (B, N, 2) pixels, patches (B, N, 3, P, P))."""
        points = self.landmarks(images)
        patches = sample_patches(images, points, self.patch_size, self.sampler)
        return self.encode_patches(patches), points, patches

    def encode_patches(self, patches: torch.Tensor, landmark_ids: torch.Tensor | None = None,
                       ) -> torch.Tensor:
        """patches (B, n, 3, P, P) of landmarks `landmark_ids` (B, n) (default: 0..N-1)."""
        b, n = patches.shape[:2]
        tokens = self.patch_embed(patches.reshape(b, n, -1))
        if landmark_ids is None:
            pos = self.pos_embed[:, 1:n + 1]
        else:
            pos = self.pos_embed[0, 1:][landmark_ids]
        tokens = torch.cat([self.cls_token.expand(b, -1, -1) + self.pos_embed[:, :1],
                            tokens + pos], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        if self.pool == "cls":
            return self.norm(tokens[:, 0])
        return self.pool_landmarks(self.norm(tokens[:, 1:]), landmark_ids)

    def pool_landmarks(self, tokens: torch.Tensor, landmark_ids: torch.Tensor | None) -> torch.Tensor:
        """tokens (B, n, dim) -> (B, dim): each landmark's own linear map, summed. A subset of
        landmarks (LAFS local views) uses its landmarks' maps, rescaled by N / n."""
        reduced = self.pool_reduce(tokens)  # (B, n, pool_dim)
        b, n, r = reduced.shape
        if landmark_ids is None:
            if n != self.num_landmarks:
                raise ValueError(f"pool='landmarks' needs all {self.num_landmarks} landmarks or "
                                 f"their landmark_ids, got {n} tokens")
            return self.pool_norm(self.pool_proj(reduced.reshape(b, n * r)))
        weight = self.pool_proj.weight.t().reshape(self.num_landmarks, r, -1)[landmark_ids]
        summed = torch.einsum("bnr,bnrd->bd", reduced, weight) * (self.num_landmarks / n)
        return self.pool_norm(summed + self.pool_proj.bias)


POOLS = ("cls", "landmarks")


def _init_vit(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def set_fused_attention(model: nn.Module, fused: bool) -> None:
    """Switch every Attention in `model` between SDPA and the explicit form (for exporters)."""
    for m in model.modules():
        if isinstance(m, Attention):
            m.fused = fused


def keep_landmarks(model: PartViT, keep: list[int]) -> PartViT:
    """A copy of `model` that places and reads only its landmarks `keep`: a start for a student of
    fewer landmarks that reuses every trained weight. The landmark CNN's min-max rescale then runs
    over the kept outputs, so the points stay where they were only where the per-image extremes
    are kept; a landmark read-out (`pool="landmarks"`) is rescaled by N / n like a LAFS local view."""
    if len(set(keep)) != len(keep) or not all(0 <= k < model.num_landmarks for k in keep):
        raise ValueError(f"keep must be distinct indices below {model.num_landmarks}")
    from lafs_edge.models.registry import create_model

    small = create_model(model.arch, **{**model.arch_config, "num_landmarks": len(keep)})
    state = model.state_dict()
    index = torch.tensor(keep)
    xy = torch.stack([2 * index, 2 * index + 1], 1).flatten()
    state["landmarks.head.weight"] = state["landmarks.head.weight"][xy]
    state["landmarks.head.bias"] = state["landmarks.head.bias"][xy]
    state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], state["pos_embed"][:, 1 + index]], 1)
    if model.pool == "landmarks":
        weight = state["pool_proj.weight"]
        per_landmark = weight.reshape(weight.shape[0], model.num_landmarks, -1)[:, index]
        state["pool_proj.weight"] = per_landmark.flatten(1) * (model.num_landmarks / len(keep))
    assert isinstance(small, PartViT)  # the registry builds the same arch it was given
    small.load_state_dict(state)
    return small
