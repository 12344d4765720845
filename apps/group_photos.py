"""Real group photos for the quickstart's recognition demo, from a package registry.

The npm package @vladmandic/face-api (MIT licence) ships six group photos in `demo/`
(sample1-6.jpg, 1920 px wide, 3-5 people each). Three people appear in two of them, which makes
an honest open-set test: enroll each from one photo, recognise them in another photo taken at
another moment, and call everyone else unknown. The package tarball is fetched once from the npm
registry over HTTPS, checked by sha256, and only the six photos (each sha256-checked too) are
kept in the cache.

Who is who was read off the photos (faces numbered left to right by their detected box) and
confirmed with the external teacher model: cosine 0.71, 0.46 and 0.46 for the three pairs,
against at most 0.43 for every other cross-photo pair of faces.
"""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..errors import UserError
from ..landmarks.fetch import cache_home, sha256_bytes

TARBALL_URL = "https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz"
TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
PHOTOS = {
    "sample1.jpg": "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51",
    "sample2.jpg": "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691",
    "sample3.jpg": "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936",
    "sample4.jpg": "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc",
    "sample5.jpg": "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938",
    "sample6.jpg": "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87",
}
# name -> (photo to enroll from, face index there), [(another photo of the same person, index)]
CAST = {
    "Ava": (("sample1.jpg", 2), [("sample3.jpg", 1)]),
    "Bea": (("sample1.jpg", 1), [("sample4.jpg", 0)]),
    "Cleo": (("sample6.jpg", 2), [("sample4.jpg", 1)]),
}
ENROLLMENT_PHOTOS = ("sample1.jpg", "sample6.jpg")   # the demo runs on the other four


def cache_dir() -> Path:
    return cache_home() / "face-api-photos"


def fetch_photos(folder: Path | None = None, log=print) -> Path:
    """The six photos in `folder` (default: the lafs-edge cache), fetched once."""
    folder = Path(folder or cache_dir())
    if all(_valid(folder / name, digest) for name, digest in PHOTOS.items()):
        return folder
    log(f"fetching the face-api demo photos (12.7 MB npm package, once): {TARBALL_URL}")
    try:
        with urllib.request.urlopen(TARBALL_URL, timeout=120) as response:
            data = response.read()
    except OSError as e:
        raise UserError(f"could not download {TARBALL_URL} ({e}); the quickstart's "
                        "recognition demo needs its photos once") from None
    if sha256_bytes(data) != TARBALL_SHA256:
        raise UserError(f"{TARBALL_URL} has an unexpected sha256; not using it")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for name, digest in PHOTOS.items():
            photo = archive.extractfile(f"package/demo/{name}").read()
            if sha256_bytes(photo) != digest:
                raise UserError(f"{name} in {TARBALL_URL} has an unexpected sha256")
            with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}.", delete=False) as tmp:
                tmp.write(photo)
            os.replace(tmp.name, folder / name)
    return folder


def _valid(path: Path, digest: str) -> bool:
    from ..runtime.manifest import sha256_file

    return path.is_file() and sha256_file(path) == digest


def expected_names(photo: str, faces: int) -> list[str]:
    """The right answer for each face (left to right) of a demo photo: a cast name or unknown."""
    names = ["unknown"] * faces
    for name, (_, appearances) in CAST.items():
        for other, index in appearances:
            if other == photo and index < faces:
                names[index] = name
    return names
