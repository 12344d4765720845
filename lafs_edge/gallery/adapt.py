"""On-device adaptation: a small head trained on the enrolled people, on the CPU, in seconds.

The head is a residual linear adapter `a(e) = normalize(e + e A)` (A starts at zero, so the head
starts as the identity) and one prototype per enrolled person, trained with a CosFace margin loss
on the embeddings of augmented views of each person's stored enrollment crops. An exported
artifact is a black box (no landmarks in, one vector out), so the LAFS landmark perturbation and
shuffle cannot be applied: the views are photometric (brightness, contrast, gamma, a lighting
gradient across the face, blur, noise, grey) and geometric (small rotation, scale, shift, mirror)
changes of the aligned crop, each embedded once by the model, after which training touches only
vectors (a few hundred full-batch steps, well under a second).

How it is used (`Gallery.identify`): the adapted cosine to each prototype ranks the people; the
open-set decision stays on the model's own cosine between the query and the chosen person's shots
against the manifest's threshold. The threshold was calibrated for the base model, and the
adapted space, fitted on the enrolled people alone, is not calibrated for strangers; gating on the
base cosine means a stranger is named only if the base model alone would name someone, so the
false-accept rate cannot rise, while the ranking among enrolled people improves.

Stored in the gallery's `adapters` table with the model fingerprint, in the same transaction
discipline as everything else; enrolling, deleting or importing drops it (the prototypes derive
from the people's faces, and a deleted person's data must not survive in them).
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from lafs_edge.errors import UserError

ADAPTERS_TABLE = """CREATE TABLE IF NOT EXISTS adapters (
    fingerprint TEXT PRIMARY KEY, people TEXT NOT NULL, state BLOB NOT NULL,
    config TEXT NOT NULL, created REAL NOT NULL)"""


MAX_MEAN_IMPOSTOR_COSINE = 0.95   # random MobileFaceNet ~0.8 (helped), distilled tiny fViT 0.97-0.99 (hurt)


@dataclass
class AdaptConfig:
    views: int = 8            # augmented views per enrollment crop (plus the crop itself)
    steps: int = 200          # full-batch Adam steps
    rank: int = 32            # A = U V^T: a few directions to amplify or suppress suffice
    lr: float = 1e-2
    scale: float = 16.0       # CosFace s: few classes, so a small scale keeps gradients alive
    margin: float = 0.2       # CosFace m
    weight_decay: float = 1e-2  # pulls A towards zero (the head towards the identity)
    seed: int = 0


@dataclass
class Adapter:
    matrix: np.ndarray        # (D, D) residual A (trained as a rank-r product)
    prototypes: np.ndarray    # (C, D) L2-normalised
    people: list[str]         # row i of prototypes is people[i]
    fingerprint: str
    config: dict = field(default_factory=dict)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(embeddings, np.float32))
        y = x + x @ self.matrix
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, C) adapted cosine of each query with each person's prototype."""
        return self.transform(embeddings) @ self.prototypes.T


@dataclass
class AdaptReport:
    people: int
    crops: int
    views: int
    seconds_views: float
    seconds_train: float
    train_accuracy_before: float   # prototype (class-mean) accuracy on the views, base space
    train_accuracy_after: float


# --- augmentation --------------------------------------------------------------------------------

def augment_crop(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random view of an aligned RGB uint8 crop: geometric, then photometric."""
    return _photometric(_geometric(crop, rng), rng)


def _geometric(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    height, width = crop.shape[:2]
    angle, scale = rng.uniform(-10, 10), rng.uniform(0.92, 1.08)
    matrix: np.ndarray = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.04, 0.04, 2) * (width, height)
    out = cv2.warpAffine(crop, matrix, (width, height), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _photometric(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    x: np.ndarray = crop.astype(np.float32) / 255.0
    if rng.random() < 0.2:
        x = np.repeat(x.mean(2, keepdims=True), 3, axis=2)
    x = np.clip((x - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.12, 0.12), 0, 1)
    x = x ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.5:   # light from one side (Yale's left/right light, a window)
        height, width = x.shape[:2]
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(theta) * np.linspace(-1, 1, width)[None, :]
                + np.sin(theta) * np.linspace(-1, 1, height)[:, None])
        x = x * (1 + rng.uniform(0.2, 0.6) * ramp)[:, :, None]
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.01, 0.03), x.shape)
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def augmented_views(crops: list[np.ndarray], views: int, seed: int) -> list[np.ndarray]:
    """Each crop followed by `views` augmented copies of it."""
    rng = np.random.default_rng(seed)
    out = []
    for crop in crops:
        out.append(crop)
        out.extend(augment_crop(crop, rng) for _ in range(views))
    return out


# --- training -----------------------------------------------------------------------------------

def train_adapter(embeddings: np.ndarray, labels: np.ndarray, people: list[str],
                  fingerprint: str, config: AdaptConfig | None = None) -> Adapter:
    """Fit A and the prototypes on L2-normalised view embeddings (N, D) with labels in
    range(len(people))."""
    config = config or AdaptConfig()
    import torch
    import torch.nn.functional as F

    from lafs_edge.models.heads import margin_logits

    torch.manual_seed(config.seed)
    x = torch.as_tensor(np.asarray(embeddings, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.int64))
    dim = x.shape[1]
    rank = min(config.rank, dim)
    means = torch.stack([x[y == c].mean(0) for c in range(len(people))])
    # A = U V^T starts at zero (V = 0) so the head starts as the identity; U random so V moves.
    down = (torch.randn(dim, rank) / dim ** 0.5).requires_grad_(True)
    up = torch.zeros(rank, dim, requires_grad=True)
    prototypes = F.normalize(means, dim=1).clone().requires_grad_(True)
    parameters = [down, up, prototypes]
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in parameters]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny matrices: a second thread only adds synchronisation
    try:
        for step in range(1, config.steps + 1):
            adapted = F.normalize(x + (x @ down) @ up, dim=1)
            cosine = adapted @ F.normalize(prototypes, dim=1).T
            logits = margin_logits(cosine, y, "cosface", config.scale, config.margin)
            loss = F.cross_entropy(logits, y) + config.weight_decay * (down @ up).pow(2).sum()
            gradients = torch.autograd.grad(loss, parameters)
            _adam_step(parameters, gradients, moments, step, config.lr)
    finally:
        torch.set_num_threads(threads)
    matrix = (down @ up).detach()
    return Adapter(matrix.numpy().astype(np.float32),
                   F.normalize(prototypes.detach(), dim=1).numpy().astype(np.float32),
                   list(people), fingerprint, asdict(config))


def _adam_step(parameters, gradients, moments, step: int, lr: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """Adam, written out: torch.optim's first use imports torch._dynamo (seconds on a phone-class
    CPU) for three small tensors."""
    import torch

    with torch.no_grad():
        for parameter, gradient, (mean, square) in zip(parameters, gradients, moments):
            mean.mul_(betas[0]).add_(gradient, alpha=1 - betas[0])
            square.mul_(betas[1]).addcmul_(gradient, gradient, value=1 - betas[1])
            corrected = (square / (1 - betas[1] ** step)).sqrt_().add_(eps)
            parameter.addcdiv_(mean, corrected, value=-lr / (1 - betas[0] ** step))


def _decode_png(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("a stored enrollment crop is not a readable PNG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(scores.argmax(1) == labels))


def adapt_gallery(gallery, embedder, config: AdaptConfig | None = None,
                  progress: bool = False) -> AdaptReport:
    """Train the head on the gallery's enrolled people (their stored crops) and store it."""
    config = config or AdaptConfig()
    if gallery.fingerprint is None:
        raise UserError(f"gallery {gallery.path} is empty: enroll at least two people first")
    gallery.check_model(embedder.fingerprint, embedder.label)
    people = [p.name for p in gallery.people()]
    crops_of = {name: [_decode_png(png) for png in gallery.crops(name)] for name in people}
    missing = [name for name, crops in crops_of.items() if not crops]
    if len(people) < 2:
        raise UserError("adaptation needs at least two enrolled people (it learns what tells "
                        "them apart)")
    if missing:
        raise UserError(f"no enrollment crops stored for {', '.join(missing)} (enrolled with "
                        "--no-crops or imported without crops): re-enroll them to adapt")
    start = time.perf_counter()
    check_spread(embedder.embed_crops([c for n in people for c in crops_of[n]]),
                 np.repeat(np.arange(len(people)), [len(crops_of[n]) for n in people]))
    embeddings, labels = embed_views(embedder, [crops_of[n] for n in people], config, progress)
    middle = time.perf_counter()
    adapter = train_adapter(embeddings, labels, people, embedder.fingerprint, config)
    end = time.perf_counter()
    means = np.stack([embeddings[labels == c].mean(0) for c in range(len(people))])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    save_adapter(gallery, adapter)
    return AdaptReport(len(people), sum(map(len, crops_of.values())), len(embeddings),
                       middle - start, end - middle, _accuracy(embeddings @ means.T, labels),
                       _accuracy(adapter.scores(embeddings), labels))


def check_spread(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Refuse a model that puts different enrolled people almost on one direction: its identity
    signal is then smaller than what the augmentation changes, and the head learns the
    augmentation (measured: a briefly distilled part fViT with cosines of 0.998 between ORL
    people lost half its rank-1, docs/demo.md). Returns the mean cross-person cosine."""
    scores = embeddings @ embeddings.T
    different = labels[:, None] != labels[None, :]
    mean = float(scores[different].mean())
    if mean > MAX_MEAN_IMPOSTOR_COSINE:
        raise UserError(f"not adapted: this model gives different enrolled people a mean cosine "
                        f"of {mean:.3f} (> {MAX_MEAN_IMPOSTOR_COSINE}); its embeddings are too "
                        "collapsed for a head trained on a few augmented photos to help")
    return mean


def embed_views(embedder, crops_per_person: list[list[np.ndarray]], config: AdaptConfig,
                progress: bool = False, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (N, D) of every crop and its augmented views, and their person index."""
    from tqdm import tqdm

    views, labels = [], []
    for index, crops in enumerate(crops_per_person):
        made = augmented_views(crops, config.views, config.seed + index)
        views += made
        labels += [index] * len(made)
    chunks = range(0, len(views), batch)
    vectors = [embedder.embed_crops(views[i:i + batch])
               for i in tqdm(chunks, desc="embedding views", unit="batch", disable=not progress)]
    return np.concatenate(vectors), np.asarray(labels)


# --- storage --------------------------------------------------------------------------------------

def save_adapter(gallery, adapter: Adapter) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, matrix=adapter.matrix, prototypes=adapter.prototypes)
    with gallery.transaction() as db:
        gallery.check_model(adapter.fingerprint)
        stored = sorted(p.name for p in gallery.people())
        if stored != sorted(adapter.people):   # someone enrolled or deleted meanwhile
            raise UserError("the gallery changed while adapting; run adapt again")
        db.execute(ADAPTERS_TABLE)
        db.execute("INSERT OR REPLACE INTO adapters VALUES (?, ?, ?, ?, ?)",
                   (adapter.fingerprint, json.dumps(adapter.people), buffer.getvalue(),
                    json.dumps(adapter.config), time.time()))


def load_adapter(connection, fingerprint: str) -> Adapter | None:
    """The stored adapter of this model, or None (no table, none trained, or another model)."""
    if not _has_table(connection):
        return None
    row = connection.execute("SELECT people, state, config FROM adapters WHERE fingerprint = ?",
                             (fingerprint,)).fetchone()
    if row is None:
        return None
    state = np.load(io.BytesIO(row[1]))
    return Adapter(state["matrix"], state["prototypes"], json.loads(row[0]), fingerprint,
                   json.loads(row[2]))


def drop_adapters(connection) -> None:
    """Inside the caller's transaction: forget every adapter (the people changed)."""
    if _has_table(connection):
        connection.execute("DELETE FROM adapters")


def _has_table(connection) -> bool:
    return connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                              "name='adapters'").fetchone() is not None


def choose_people(adapter: Adapter, queries: np.ndarray, people: list[str]) -> np.ndarray:
    """Column (in `people`) of the best adapted match of each query."""
    column_of = {name: column for column, name in enumerate(people)}
    order = np.array([column_of[name] for name in adapter.people])
    return order[adapter.scores(queries).argmax(1)]
