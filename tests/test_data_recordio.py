"""RecordIO and WebDataset readers: on a record built byte by byte from the documented layout,
and on files `lafs-edge data pack` wrote (pixels and labels read back equal)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from lafs_edge.cli import main
from lafs_edge.errors import UserError
from lafs_edge.image_folders import to_112
from lafs_edge.train.data.folders import LabelledFolder
from lafs_edge.train.data.recordio import (IRHeader, RecordIODataset, RecordIOFile, RecordIOWriter,
                                           pack_record)
from lafs_edge.train.data.webdataset import WebDatasetShards
from testkit import encode_png

pytestmark = pytest.mark.data

MAGIC = 0xCED7230A


def _part(cflag: int, data: bytes) -> bytes:
    return struct.pack("<II", MAGIC, (cflag << 29) | len(data)) + data + b"\0" * (-len(data) % 4)


@pytest.fixture()
def hand_built(tmp_path):
    """Header record 0, two images (one a multi-part record with an array label), two identities."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 6, 3), dtype=np.uint8) for _ in range(2)]
    # Record 0: flag 2, label array [first identity record 3, end 5).
    rec0 = struct.pack("<IfQQ", 2, 0.0, 0, 0) + struct.pack("<2f", 3, 5)
    rec1 = struct.pack("<IfQQ", 0, 0.0, 1, 0) + encode_png(images[0])
    # Image 2 carries an array label [1, x] whose second float's bytes ARE the magic word, at the
    # 4-byte-aligned offset 28: mxnet's writer splits the record there (part flags 1 then 3).
    head2 = struct.pack("<IfQQ", 2, 0.0, 2, 0) + struct.pack("<f", 1.0)
    rec2_parts = _part(1, head2) + _part(3, encode_png(images[1]))
    rec3 = struct.pack("<IfQQ", 2, 0.0, 3, 0) + struct.pack("<2f", 1, 2)
    rec4 = struct.pack("<IfQQ", 2, 0.0, 4, 0) + struct.pack("<2f", 2, 3)
    blobs = [_part(0, rec0), _part(0, rec1), rec2_parts, _part(0, rec3), _part(0, rec4)]
    offsets, data = [], b""
    for blob in blobs:
        offsets.append(len(data))
        data += blob
    (tmp_path / "train.rec").write_bytes(data)
    (tmp_path / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)))
    full_rec2 = head2 + struct.pack("<I", MAGIC) + encode_png(images[1])
    assert full_rec2[28:32] == struct.pack("<I", MAGIC)
    return tmp_path, images, [rec0, rec1, full_rec2, rec3, rec4], data


def test_hand_built_record_reads(hand_built):
    root, images, _, _ = hand_built
    dataset = RecordIODataset(root)
    assert len(dataset) == 2 and dataset.num_classes == 2
    assert dataset.identity_ranges() == [(1, 2), (2, 3)]
    for i, (image, label) in enumerate(dataset):
        np.testing.assert_array_equal(image, images[i])
        assert label == i


def test_reader_joins_split_parts_and_scans_without_idx(hand_built):
    root, _, records, _ = hand_built
    with_idx = RecordIOFile(root / "train.rec")
    (root / "train.idx").unlink()
    scanned = RecordIOFile(root / "train.rec")
    assert scanned.keys == [0, 1, 2, 3, 4]
    for key, record in enumerate(records):
        assert with_idx.read_idx(key) == record == scanned.read_idx(key)


def test_writer_reproduces_the_hand_built_bytes(hand_built, tmp_path_factory):
    _, _, records, data = hand_built
    out = tmp_path_factory.mktemp("written")
    with RecordIOWriter(out / "train.rec") as writer:
        for key, record in enumerate(records):
            writer.write(key, record)
    assert (out / "train.rec").read_bytes() == data


def test_dataloader_workers_read_their_own_handles(hand_built):
    from torch.utils.data import DataLoader

    root, images, _, _ = hand_built
    dataset = RecordIODataset(root)
    dataset[0]  # the parent opens its handle first; forked workers must not share its position
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=lambda batch: batch[0])
    for i, (image, label) in enumerate(loader):
        np.testing.assert_array_equal(image, images[i])
        assert label == i


def test_pack_record_matches_mxnet_layout():
    assert pack_record(IRHeader(0, 3.0, 7, 0), b"xy") == struct.pack("<IfQQ", 0, 3.0, 7, 0) + b"xy"
    assert pack_record(IRHeader(0, [1, 2], 0), b"") == struct.pack("<IfQQ2f", 2, 0.0, 0, 0, 1, 2)


def test_bgr_flag_swaps_channels(hand_built):
    root, images, _, _ = hand_built
    image, _ = RecordIODataset(root, bgr=True)[0]
    np.testing.assert_array_equal(image, images[0][:, :, ::-1])


def test_corrupt_rec_is_a_user_error(hand_built):
    root, *_ = hand_built
    data = bytearray((root / "train.rec").read_bytes())
    data[0] ^= 0xFF
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(UserError, match="bad magic"):
        RecordIODataset(root)


def test_pack_recordio_reads_back(shared_data, tmp_path, capsys):
    src = shared_data / "orl"
    assert main(["data", "pack", str(src), "--format", "recordio", "--out", str(tmp_path),
                 "--to-112", "--encoding", "png"]) == 0
    assert "images 400, identities 40" in capsys.readouterr().out
    packed = RecordIODataset(tmp_path)
    source = LabelledFolder(src, transform=to_112)
    assert len(packed) == 400 and packed.num_classes == 40
    assert (tmp_path / "property").read_text() == "40,112,112\n"
    order = sorted(range(len(source)), key=lambda i: (source.samples[i][1], str(source.samples[i][0])))
    for position in (0, 1, 137, 399):
        image, label = packed[position]
        expected, expected_label = source[order[position]]
        np.testing.assert_array_equal(image, expected)
        assert label == expected_label


def test_pack_jpeg_is_close(shared_data, tmp_path):
    assert main(["data", "pack", str(shared_data / "orl"), "--format", "recordio",
                 "--out", str(tmp_path), "--to-112"]) == 0
    image, label = RecordIODataset(tmp_path)[0]
    expected, expected_label = LabelledFolder(shared_data / "orl", transform=to_112)[0]
    assert label == expected_label
    assert np.abs(image.astype(int) - expected).mean() < 2.0


def test_pack_webdataset_reads_back_split_across_ranks(shared_data, tmp_path):
    src = shared_data / "yale"
    assert main(["data", "pack", str(src), "--format", "webdataset", "--out", str(tmp_path),
                 "--encoding", "png", "--shard-size", "40"]) == 0
    source = LabelledFolder(src)
    expected = {}
    for path, label in source.samples:
        expected.setdefault(label, []).append(path)
    halves = [list(WebDatasetShards(tmp_path, rank=r, world_size=2)) for r in range(2)]
    assert len(halves[0]) + len(halves[1]) == 165 and min(map(len, halves)) > 0
    streamed = halves[0] + halves[1]
    assert sorted(label for _, label in streamed) == sorted(source.targets)
    # Every streamed image equals a source image of the same label, pixel for pixel.
    first_of = {label: source[source.targets.index(label)][0] for label in range(15)}
    assert sum(any(np.array_equal(first_of[label], image) for image, l in streamed if l == label)
               for label in range(15)) == 15
    shuffled = [label for _, label in WebDatasetShards(tmp_path, shuffle=16, seed=1, world_size=1, rank=0)]
    again = [label for _, label in WebDatasetShards(tmp_path, shuffle=16, seed=1, world_size=1, rank=0)]
    assert shuffled == again and sorted(shuffled) == sorted(source.targets)


def test_webdataset_workers_split_shards(shared_data, tmp_path):
    from torch.utils.data import DataLoader

    assert main(["data", "pack", str(shared_data / "orl"), "--format", "webdataset",
                 "--out", str(tmp_path), "--to-112", "--shard-size", "100"]) == 0
    stream = WebDatasetShards(tmp_path, rank=0, world_size=1)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    labels = [label for _, label in loader]
    assert sorted(labels) == sorted(LabelledFolder(shared_data / "orl").targets)


def test_too_few_shards_for_ranks(shared_data, tmp_path):
    assert main(["data", "pack", str(shared_data / "yale"), "--format", "webdataset",
                 "--out", str(tmp_path)]) == 0
    with pytest.raises(UserError, match="shards cannot feed"):
        WebDatasetShards(tmp_path, rank=0, world_size=2)


def test_pack_bad_source_is_one_line(tmp_path, capsys):
    assert main(["data", "pack", str(tmp_path / "missing"), "--format", "recordio",
                 "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: not a folder")
    assert not (tmp_path / "out" / "train.rec").exists()
