"""InsightFace RecordIO (`train.rec` + `train.idx`), read and written without mxnet.

Byte layout (dmlc-core recordio, as mxnet writes it; all integers little-endian):

* A record on disk is one or more parts. Each part: uint32 magic 0xced7230a, uint32 `lrecord`
  (upper 3 bits `cflag`, lower 29 bits `length`), `length` payload bytes, zero padding to a
  multiple of 4. `cflag` 0 = whole record; 1/2/3 = first/middle/last part. The writer splits a
  payload wherever the magic appears at a 4-byte-aligned offset and drops those 4 bytes, so the
  reader joins the parts with the magic re-inserted.
* `train.idx` is text, one `key<TAB>byte offset of the record's first part` per line.
* A payload starts with the IRHeader, struct `<IfQQ` (24 bytes): flag (uint32), label
  (float32), id (uint64), id2 (uint64). If flag > 0 the label is instead `flag` float32 values
  that follow the header (and the header's label field is 0); the image bytes come after.
* InsightFace sets: record 0 is a header with label = [first identity record, end of identity
  records]; images are records 1 .. label[0]-1 (label = identity, or an array whose first value
  is the identity); each identity record holds label = [first image, end image) of one identity.

Some releases store images with the red and blue channels swapped (AdaFace's loader has a
`swap_color_channel` switch for them, e.g. its MS1MV3); `bgr=True` swaps them back.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from torch.utils.data import Dataset

from lafs_edge.errors import UserError
from lafs_edge.fileio import write_text_atomic

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24


@dataclass
class IRHeader:
    flag: int
    label: Any              # float; a float32 array when flag > 0 (any sequence when packing)
    id: int
    id2: int = 0


def pack_record(header: IRHeader, payload: bytes = b"") -> bytes:
    """IRHeader (+ float32 label array when the label is a sequence) + payload, as mxnet packs it."""
    label = np.asarray(header.label, dtype=np.float32)
    if label.ndim == 0:
        return struct.pack(IR_FORMAT, 0, float(label), header.id, header.id2) + payload
    return struct.pack(IR_FORMAT, label.size, 0.0, header.id, header.id2) + label.tobytes() + payload


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    if len(record) < IR_SIZE:
        raise UserError(f"record of {len(record)} bytes is shorter than its {IR_SIZE}-byte header")
    flag, label, key, key2 = struct.unpack(IR_FORMAT, record[:IR_SIZE])
    body = record[IR_SIZE:]
    if flag > 0:
        if len(body) < 4 * flag:
            raise UserError(f"record header announces {flag} labels but the record is too short")
        label = np.frombuffer(body, dtype=np.float32, count=flag).copy()
        body = body[4 * flag:]
    return IRHeader(flag, label, key, key2), body


def encode_parts(payload: bytes) -> bytes:
    """The on-disk bytes of one record (split at aligned magic words, padded to 4 bytes)."""
    if len(payload) >= 1 << 29:
        raise UserError("RecordIO records must be smaller than 512 MiB")
    out, start = [], 0
    for i in range(0, len(payload) - len(payload) % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            out.append(_part(1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    out.append(_part(3 if start else 0, payload[start:]))
    return b"".join(out)


def _part(cflag: int, data: bytes) -> bytes:
    pad = (-len(data)) % 4
    return struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data + b"\0" * pad


class RecordIOFile:
    """Random access to the records of a `.rec` through its `.idx` (or a scan when there is none)."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise UserError(f"RecordIO file not found: {self.rec_path}")
        idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.offsets = read_index(idx_path) if idx_path.is_file() else self._scan_offsets()
        self._file = None
        self._pid = None

    @property
    def keys(self) -> list[int]:
        return list(self.offsets)

    def read_idx(self, key: int) -> bytes:
        if key not in self.offsets:
            raise UserError(f"{self.rec_path}: no record with key {key}")
        return self.read_at(self.offsets[key])

    def read_at(self, offset: int) -> bytes:
        f = self._handle()
        f.seek(offset)
        parts = []
        while True:
            head = f.read(8)
            if len(head) != 8:
                raise UserError(f"{self.rec_path}: truncated record at byte {offset}")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise UserError(f"{self.rec_path}: bad magic {magic:#x} at byte {f.tell() - 8} "
                                "(not a RecordIO file, or a wrong .idx)")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            data = f.read(length + (-length) % 4)
            if len(data) < length:
                raise UserError(f"{self.rec_path}: truncated record at byte {offset}")
            parts.append(data[:length])
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)
            if cflag not in (1, 2):
                raise UserError(f"{self.rec_path}: invalid part flag {cflag} at byte {offset}")

    def _handle(self):
        # One handle per process: DataLoader workers forked from the parent must not share a seek position.
        if self._file is None or self._pid != os.getpid():
            self._file = open(self.rec_path, "rb")
            self._pid = os.getpid()
        return self._file

    def _scan_offsets(self) -> dict[int, int]:
        """Sequential keys 0, 1, ... for every record start (what an .idx-less reader sees)."""
        offsets, key, position = {}, 0, 0
        size = self.rec_path.stat().st_size
        with open(self.rec_path, "rb") as f:
            starting = True
            while position < size:
                f.seek(position)
                magic, lrecord = struct.unpack("<II", f.read(8))
                if magic != MAGIC:
                    raise UserError(f"{self.rec_path}: bad magic at byte {position}")
                cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
                if starting:
                    offsets[key] = position
                    key += 1
                starting = cflag in (0, 3)
                position += 8 + length + (-length) % 4
        return offsets

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_index(idx_path: str | os.PathLike) -> dict[int, int]:
    offsets = {}
    for number, line in enumerate(Path(idx_path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            offsets[int(fields[0])] = int(fields[1])
        except (ValueError, IndexError):
            raise UserError(f"{idx_path}:{number}: expected 'key<TAB>offset'") from None
    return offsets


def decode_image(data: bytes, bgr: bool = False) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3); `bgr` for sets stored with swapped channels."""
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError("record does not hold a decodable image")
    return np.ascontiguousarray(image if bgr else image[:, :, ::-1])


class RecordIODataset(Dataset):
    """(image RGB uint8 (H, W, 3) or transform(image), int label) from an InsightFace RecordIO set.

    `path` is the folder holding train.rec/train.idx, or the .rec itself.
    """

    def __init__(self, path: str | os.PathLike, transform=None, bgr: bool = False):
        path = Path(path)
        rec = path / "train.rec" if path.is_dir() else path
        self.file = RecordIOFile(rec)
        self.transform = transform
        self.bgr = bgr
        header, _ = unpack_record(self.file.read_idx(0)) if 0 in self.file.offsets else (None, b"")
        if header is not None and header.flag > 0:
            first_identity, end_identity = int(header.label[0]), int(header.label[1])
            self.indices = list(range(1, first_identity))
            self.identity_keys = list(range(first_identity, end_identity))
        else:  # no InsightFace header: every record is an image
            self.indices = sorted(self.file.offsets)
            self.identity_keys = []
        self._num_classes = len(self.identity_keys) or None

    @property
    def num_classes(self) -> int:
        """From the identity records; without them, one scan of the image headers."""
        if self._num_classes is None:
            self._num_classes = int(max(self.label_of(k) for k in self.indices)) + 1
        return self._num_classes

    def identity_ranges(self) -> list[tuple[int, int]]:
        """[first image key, end image key) for each identity record."""
        ranges = []
        for key in self.identity_keys:
            header, _ = unpack_record(self.file.read_idx(key))
            ranges.append((int(header.label[0]), int(header.label[1])))
        return ranges

    def label_of(self, key: int) -> int:
        header, _ = unpack_record(self.file.read_idx(key))
        return _scalar_label(header)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        header, data = unpack_record(self.file.read_idx(self.indices[i]))
        image = decode_image(data, self.bgr)
        return (self.transform(image) if self.transform else image), _scalar_label(header)


def _scalar_label(header: IRHeader) -> int:
    label = header.label
    return int(label if np.ndim(label) == 0 else label[0])


class RecordIOWriter:
    """Writes records and their `.idx` to temporary names; `close()` moves both into place."""

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path else self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.rec_path.with_name(f".{self.rec_path.name}.tmp{os.getpid()}")
        self._tmp_idx = self.idx_path.with_name(f".{self.idx_path.name}.tmp{os.getpid()}")
        self._rec = open(self._tmp_rec, "wb")
        self._idx = open(self._tmp_idx, "w")

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_parts(record))

    def close(self) -> None:
        self._rec.close()
        self._idx.close()
        os.replace(self._tmp_rec, self.rec_path)
        os.replace(self._tmp_idx, self.idx_path)

    def abort(self) -> None:
        self._rec.close()
        self._idx.close()
        self._tmp_rec.unlink(missing_ok=True)
        self._tmp_idx.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        self.abort() if exc_type else self.close()


def write_insightface_rec(out_dir: str | os.PathLike, items: Iterable[tuple[bytes, int]],
                          num_items: int, num_classes: int,
                          image_size: tuple[int, int] = (112, 112)) -> dict:
    """Write `train.rec`, `train.idx` and `property` in the InsightFace layout.

    `items`: `num_items` (encoded image, label) pairs sorted by label, every label in
    0..num_classes-1 present. Records go in key order (header 0, images, identities), so a
    reader without the .idx sees the same keys.
    """
    if num_items < 1 or num_classes < 1:
        raise UserError("nothing to pack: no images or no identities")
    out_dir = Path(out_dir)
    first_identity = num_items + 1
    starts: list[int] = []
    with RecordIOWriter(out_dir / "train.rec", out_dir / "train.idx") as writer:
        writer.write(0, pack_record(IRHeader(2, [first_identity, first_identity + num_classes], 0)))
        key = 0
        for key, (data, label) in enumerate(items, start=1):
            if label != len(starts) - 1:  # a new identity starts here
                if label != len(starts):
                    raise UserError("items must be sorted by label with labels 0..C-1 all present")
                starts.append(key)
            writer.write(key, pack_record(IRHeader(0, float(label), key), data))
        if key != num_items or len(starts) != num_classes:
            raise UserError(f"expected {num_items} images of {num_classes} identities, "
                            f"got {key} of {len(starts)}")
        ends = starts[1:] + [num_items + 1]
        for label, (start, end) in enumerate(zip(starts, ends)):
            writer.write(first_identity + label,
                         pack_record(IRHeader(2, [start, end], first_identity + label)))
    write_text_atomic(out_dir / "property", f"{num_classes},{image_size[0]},{image_size[1]}\n")
    return {"images": num_items, "identities": num_classes}

