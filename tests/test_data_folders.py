"""Image folders (ORL, Yale), 5-point landmark lists (wild5) and k-shot lists."""
from __future__ import annotations

import numpy as np
import pytest

from lafs_edge.align import ARCFACE_TEMPLATE_112, align_face, similarity_transform
from lafs_edge.cli import main
from lafs_edge.errors import UserError
from lafs_edge.image import read_image
from lafs_edge.image_folders import to_112
from lafs_edge.train.data.folders import LabelledFolder, UnlabelledFolder
from lafs_edge.train.data.kshot import kshot_parameters, select_kshot, write_kshot_list
from lafs_edge.landmark_lists import LandmarkFaces, read_landmark_list

pytestmark = pytest.mark.data


def test_orl_folders(shared_data):
    orl = LabelledFolder(shared_data / "orl")
    assert len(orl) == 400 and orl.num_classes == 40
    assert orl.classes == sorted(f"s{i}" for i in range(1, 41))
    image, label = orl[0]
    assert image.shape == (112, 92, 3) and image.dtype == np.uint8 and label == 0
    assert all(orl.classes[label] == path.parent.name for path, label in orl.samples)


def test_yale_flat_extensionless_gifs(shared_data):
    yale = LabelledFolder(shared_data / "yale", transform=to_112)
    assert len(yale) == 165 and yale.num_classes == 15
    assert np.bincount(yale.targets).tolist() == [11] * 15
    image, _ = yale[5]
    assert image.shape == (112, 112, 3)


def test_to_112_letterboxes_without_cropping():
    image = np.full((112, 92, 3), 200, np.uint8)
    boxed = to_112(image)
    assert boxed.shape == (112, 112, 3)
    assert (boxed[:, 10:102] == 200).all() and (boxed[:, :10] == 0).all() and (boxed[:, 102:] == 0).all()
    wide = to_112(np.full((243, 320, 3), 9, np.uint8))
    rows = np.where(wide[:, 56, 0] == 9)[0]
    assert rows.min() == 13 and rows.max() == 97  # 320x243 -> 112x85, top (112-85)//2


def test_unlabelled_any_tree(shared_data):
    pool = UnlabelledFolder(shared_data / "wild5" / "lfw_5590")
    assert len(pool) > 1000
    assert pool[0].shape == (80, 80, 3)


def test_mixed_layout_is_refused(tmp_path, shared_data):
    (tmp_path / "a").mkdir()
    for target in (tmp_path / "a" / "1.pgm", tmp_path / "2.pgm"):
        target.write_bytes((shared_data / "orl" / "s1" / "1.pgm").read_bytes())
    with pytest.raises(UserError, match="mixes identity folders"):
        LabelledFolder(tmp_path)


def test_wild5_order_and_alignment(shared_data):
    list_file = shared_data / "wild5" / "landmarks.txt"
    faces = LandmarkFaces(list_file, return_points=True)
    assert len(faces) == 7641 and faces.swapped == 0  # documented order (image-left first) holds
    points = np.stack([p for _, p in faces.entries])
    # Eyes above the nose, nose above the mouth: the 2nd half of each line is y, not x.
    assert np.mean(points[:, 2, 1] > points[:, :2, 1].max(1)) > 0.99
    assert np.mean(points[:, 2, 1] < points[:, 3:, 1].min(1)) > 0.99
    for i in (0, 3000, 7640):
        crop, original = faces[i]
        path = faces.entries[i][0]
        np.testing.assert_array_equal(crop, align_face(read_image(path), original))
        matrix = similarity_transform(original, ARCFACE_TEMPLATE_112)
        mapped = original @ matrix[:, :2].T + matrix[:, 2]
        # Mapped eyes are level and image-left first, where the template puts them.
        assert np.abs(mapped[:2] - ARCFACE_TEMPLATE_112[:2]).max() < 8


def test_mirrored_list_is_put_in_template_order(tmp_path, shared_data):
    rel, points = read_landmark_list(shared_data / "wild5" / "landmarks.txt")[0]
    mirrored = points[[1, 0, 2, 4, 3]]
    line = " ".join([rel] + [f"{v}" for v in np.concatenate([mirrored[:, 0], mirrored[:, 1]])])
    (tmp_path / "list.txt").write_text(line + "\n")
    faces = LandmarkFaces(tmp_path / "list.txt", root=shared_data / "wild5")
    assert faces.swapped == 1
    np.testing.assert_allclose(faces.entries[0][1], points)
    reference = LandmarkFaces(shared_data / "wild5" / "landmarks.txt")[0]
    np.testing.assert_array_equal(faces[0], reference)


def test_bad_landmark_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.jpg 1 2 3\n")
    with pytest.raises(UserError, match="list.txt:1"):
        read_landmark_list(tmp_path / "list.txt")


def test_kshot_is_deterministic_and_reads_back(shared_data, tmp_path, capsys):
    root = shared_data / "orl"
    argv = ["data", "kshot", str(root), "--k", "3", "--fraction", "0.5", "--seed", "7"]
    assert main(argv + ["--out", str(tmp_path / "a.lst")]) == 0
    assert main(argv + ["--out", str(tmp_path / "b.lst")]) == 0
    assert "wrote 60 images of 20 identities" in capsys.readouterr().out
    assert (tmp_path / "a.lst").read_bytes() == (tmp_path / "b.lst").read_bytes()
    write_kshot_list(root, tmp_path / "c.lst", k=3, fraction=0.5, seed=8)
    assert (tmp_path / "c.lst").read_bytes() != (tmp_path / "a.lst").read_bytes()
    subset = LabelledFolder(root, list_file=tmp_path / "a.lst")
    assert subset.num_classes == 20 and np.bincount(subset.targets).tolist() == [3] * 20
    assert kshot_parameters(tmp_path / "a.lst")["seed"] == "7"
    unlabelled = UnlabelledFolder(root, list_file=tmp_path / "a.lst")
    np.testing.assert_array_equal(unlabelled[4], subset[4][0])


def test_kshot_skips_identities_with_too_few_images(tmp_path):
    entries = [(tmp_path / f"{name}{i}.png", name) for name, n in (("a", 5), ("b", 2)) for i in range(n)]
    picked = select_kshot(entries, k=3)
    assert {name for _, name in picked} == {"a"} and len(picked) == 3
    with pytest.raises(UserError, match="no identity has 9"):
        select_kshot(entries, k=9)


@pytest.mark.parametrize("suffix, cut", [(".png", 20), (".jpg", 200)])
def test_a_truncated_image_is_one_clear_error_without_codec_noise(tmp_path, capfd, suffix, cut):
    """A PNG cut before its IEND chunk (or a JPEG before its end marker) is refused before the
    decoder runs: no libpng/libjpeg lines on stderr, no half-decoded image."""
    import cv2

    whole = tmp_path / f"whole{suffix}"
    cv2.imwrite(str(whole), (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    assert read_image(whole).shape == (64, 64, 3)
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(whole.read_bytes()[:-cut])
    capfd.readouterr()
    with pytest.raises(UserError, match="not a readable image .truncated file."):
        read_image(broken)
    assert capfd.readouterr().err == ""
