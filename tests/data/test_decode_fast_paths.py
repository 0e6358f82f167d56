"""The decoder's fast paths (plain TIFF straight from its bytes, JPEG through simplejpeg) give exactly cv2's pixels,
and hand everything else to cv2; the id check and file reading they rely on keep their old behaviour."""

from __future__ import annotations

import errno
import gc
import itertools
import os
import re
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import simplejpeg
import tifffile
from PIL import Image

import harness.data as data
import harness.data.decode as decode
import harness.data.decode_pool as decode_pool
import harness.data.labels as labels
from harness.data.decode import decode_image
from harness.errors import HarnessError

# Data layer only: no model is built, so the outcome cannot depend on the Keras backend (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free

RNG = np.random.default_rng(5)
# Texture and flat areas, as tissue patches have: JPEG's smoothing and rounding get exercised.
RGB = np.clip(
    cv2.GaussianBlur(RNG.integers(0, 256, (96, 96, 3), dtype=np.uint8), (5, 5), 0).astype(int)
    + RNG.integers(-20, 21, (96, 96, 3)),
    0,
    255,
).astype(np.uint8)


def cv2_outcome(path: Path) -> np.ndarray | str:
    """What the cv2-only decoder makes of a file: its RGB pixels, or its error message."""
    try:
        return decode._cv2_decode(path, path.read_bytes())
    except HarnessError as e:
        return str(e)


def decoded(path: Path) -> np.ndarray | str:
    try:
        return decode_image(path)
    except HarnessError as e:
        return str(e)


def assert_same_as_cv2(path: Path) -> None:
    ours, theirs = decoded(path), cv2_outcome(path)
    if isinstance(theirs, str):
        assert ours == theirs
    else:
        assert isinstance(ours, np.ndarray), ours
        np.testing.assert_array_equal(ours, theirs)
        # Into a given array, too: the cache build decodes straight into its chunk buffer.
        out = np.zeros((96, 96, 3), np.uint8)
        assert decode_image(path, out) is out
        np.testing.assert_array_equal(out, theirs)


# ----------------------------------------------------------------------------- TIFF


def tiff_via_cv2(path: Path, rgb: np.ndarray = RGB, compression: int = 1) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_TIFF_COMPRESSION, compression])
    return path


def tiff_via_tifffile(path: Path, rgb: np.ndarray = RGB, **kwargs) -> Path:
    tifffile.imwrite(path, rgb, photometric="rgb", **kwargs)
    return path


def tiff_by_hand(
    rgb: np.ndarray,
    order: str = "<",
    rows: int = 96,
    strip_order: list[int] | None = None,
    gap: int = 0,
    more_tags: tuple[tuple[int, int], ...] = (),
) -> bytes:
    """A minimal uncompressed RGB TIFF: header, pixel strips (in `strip_order` on disk, `gap` bytes apart), then
    the out-of-line values and the tag entries, plus `more_tags` as (tag, SHORT value)."""
    rows_bytes = [rgb[i : i + rows].tobytes() for i in range(0, 96, rows)]
    strip_order = strip_order or list(range(len(rows_bytes)))
    body, offsets, at = b"", [0] * len(rows_bytes), 8
    for i in strip_order:
        offsets[i] = at
        body += rows_bytes[i] + bytes(gap)
        at += len(rows_bytes[i]) + gap
    n = len(rows_bytes)
    offsets_at = counts_at = 0
    extra = at  # out-of-line values follow the strips: BitsPerSample, then offsets and counts when n > 1
    bits = struct.pack(order + "3H", 8, 8, 8)
    out_of_line = bits
    if n > 1:
        offsets_at, counts_at = extra + 6, extra + 6 + 4 * n
        out_of_line += struct.pack(f"{order}{n}I", *offsets) + struct.pack(f"{order}{n}I", *map(len, rows_bytes))
    ifd = extra + len(out_of_line)

    def entry(tag: int, kind: int, count: int, value: int) -> tuple[int, bytes]:
        raw = struct.pack(order + "H", value) + b"\0\0" if kind == 3 and count == 1 else struct.pack(order + "I", value)
        return tag, struct.pack(order + "HHI", tag, kind, count) + raw

    entries = [
        entry(256, 3, 1, 96),
        entry(257, 3, 1, 96),
        entry(258, 3, 3, extra),
        entry(259, 3, 1, 1),
        entry(262, 3, 1, 2),
        entry(273, 4, n, offsets_at if n > 1 else offsets[0]),
        entry(277, 3, 1, 3),
        entry(278, 3, 1, rows),
        entry(279, 4, n, counts_at if n > 1 else len(rows_bytes[0])),
        entry(284, 3, 1, 1),
        *(entry(tag, 3, 1, value) for tag, value in more_tags),
    ]
    entries.sort(key=lambda e: e[0])  # by tag, as TIFF wants; a stable sort keeps a repeated tag after the first
    magic = b"II*\0" if order == "<" else b"MM\0*"
    head = magic + struct.pack(order + "I", ifd)
    tags = struct.pack(order + "H", len(entries)) + b"".join(e[1] for e in entries) + b"\0\0\0\0"  # no next IFD
    return head + body + out_of_line + tags


PLAIN_TIFFS = {
    "cv2-uncompressed-multistrip": lambda p: tiff_via_cv2(p),
    "tifffile-little-endian": lambda p: tiff_via_tifffile(p),
    "tifffile-big-endian": lambda p: tiff_via_tifffile(p, byteorder=">"),
    "tifffile-strips-of-10-rows": lambda p: tiff_via_tifffile(p, rowsperstrip=10),
    "tifffile-big-endian-strips-of-7": lambda p: tiff_via_tifffile(p, byteorder=">", rowsperstrip=7),
    "pillow-uncompressed": lambda p: Image.fromarray(RGB).save(p, format="TIFF") or p,
    "by-hand-one-strip": lambda p: p.write_bytes(tiff_by_hand(RGB)) and p,
    "by-hand-big-endian-4-strips": lambda p: p.write_bytes(tiff_by_hand(RGB, ">", rows=24)) and p,
}


@pytest.mark.parametrize("name", sorted(PLAIN_TIFFS))
def test_plain_tiff_fast_path_gives_cv2_pixels(name, tmp_path):
    path = PLAIN_TIFFS[name](tmp_path / "x.tif")
    view = decode._plain_tiff_pixels(path.read_bytes())
    assert view is not None, "a plain 96x96 RGB TIFF must take the fast path"
    np.testing.assert_array_equal(view, RGB)
    assert_same_as_cv2(path)


OTHER_TIFFS = {
    "lzw": lambda p: tiff_via_cv2(p, compression=5),
    "deflate": lambda p: tiff_via_tifffile(p, compression="zlib"),
    "planar-separate": lambda p: tiff_via_tifffile(p, planarconfig="separate"),
    "tiled": lambda p: tiff_via_tifffile(p, tile=(32, 32)),
    "strips-out-of-order": lambda p: p.write_bytes(tiff_by_hand(RGB, rows=24, strip_order=[1, 0, 3, 2])) and p,
    "strips-apart": lambda p: p.write_bytes(tiff_by_hand(RGB, rows=24, gap=5)) and p,
    "rotated": lambda p: tiff_via_tifffile(p, extratags=[(274, 3, 1, 3, False)]),  # Orientation: cv2 turns it
    "fill-order-2": lambda p: p.write_bytes(tiff_by_hand(RGB, more_tags=((266, 2),))) and p,
    "predictor-2": lambda p: p.write_bytes(tiff_by_hand(RGB, more_tags=((317, 2),))) and p,
    "repeated-tag": lambda p: p.write_bytes(tiff_by_hand(RGB, more_tags=((259, 1),))) and p,
    "signed-8-bit": lambda p: tiff_via_tifffile(p, RGB.astype(np.int8)),
    "wrong-size": lambda p: tiff_via_cv2(p, np.zeros((64, 64, 3), np.uint8)),
    "grayscale": lambda p: tifffile.imwrite(p, RGB[..., 0]) or p,
    "16-bit": lambda p: tiff_via_tifffile(p, np.full((96, 96, 3), 999, np.uint16)),
    "4-channels": lambda p: tiff_via_tifffile(p, np.zeros((96, 96, 4), np.uint8)),
    "truncated": lambda p: p.write_bytes(tiff_by_hand(RGB)[:20000]) and p,
    "ifd-past-the-end": lambda p: p.write_bytes(b"II*\0" + struct.pack("<I", 10**6) + bytes(100)) and p,
}


def test_tiff_layout_memo_checks_the_values_outside_the_entries(tmp_path):
    """Two files with the same tag entries but strips listed differently: the second must not reuse the first."""
    contiguous = tiff_by_hand(RGB, rows=24)
    shuffled = tiff_by_hand(RGB, rows=24, strip_order=[1, 0, 3, 2])
    ifd = struct.unpack_from("<I", contiguous, 4)[0]
    assert contiguous[:8] == shuffled[:8] and contiguous[ifd:] == shuffled[ifd:] and len(contiguous) == len(shuffled)
    decode._TIFF_LAYOUTS.clear()
    assert decode._plain_tiff_pixels(contiguous) is not None
    assert decode._plain_tiff_pixels(shuffled) is None
    path = tmp_path / "shuffled.tif"
    path.write_bytes(shuffled)
    np.testing.assert_array_equal(decode_image(path), RGB)  # cv2 follows the offsets


def test_synthetic_kaggle_tifs_take_the_fast_path(tmp_path):
    """harness.data.synth writes Kaggle's format; each of its files is read straight from its bytes, as cv2 reads it."""
    from harness.data.synth import write_kaggle_folder

    root = write_kaggle_folder(tmp_path / "synth", 12, 4)
    for path in sorted((root / "train").iterdir()) + sorted((root / "test").iterdir()):
        assert path.stat().st_size == 27_830  # Kaggle's size
        assert decode._plain_tiff_pixels(path.read_bytes()) is not None
        assert_same_as_cv2(path)


# ----------------------------------------------------------------------------- JPEG


def jpeg_via_cv2(path: Path, rgb: np.ndarray = RGB, *params: int) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), list(params))
    return path


JPEGS = {
    "420-q90": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_QUALITY, 90),
    "420-q50": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_QUALITY, 50),
    "444": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "422": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
    "progressive": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "optimized": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_OPTIMIZE, 1),
    "restart-intervals": lambda p: jpeg_via_cv2(p, RGB, cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
    "pillow-q95": lambda p: Image.fromarray(RGB).save(p, format="JPEG", quality=95) or p,
    "simplejpeg-440": lambda p: p.write_bytes(simplejpeg.encode_jpeg(RGB, 85, colorsubsampling="440")) and p,
}


@pytest.mark.parametrize("name", sorted(JPEGS))
def test_jpeg_fast_path_gives_cv2_pixels(name, tmp_path):
    path = JPEGS[name](tmp_path / "x.jpg")
    assert decode._jpeg_pixels(path.read_bytes()) is not None, "a 96x96 YCbCr JPEG must take the fast path"
    assert_same_as_cv2(path)


def cmyk_jpeg(path: Path) -> Path:
    Image.fromarray(RGB).convert("CMYK").save(path, format="JPEG", quality=90)
    return path


def truncated_jpeg(path: Path) -> Path:
    jpeg_via_cv2(path)
    path.write_bytes(path.read_bytes()[:-200])
    return path


OTHER_JPEGS = {
    "grayscale": lambda p: jpeg_via_cv2(p, RGB[..., 0]),
    "cmyk": cmyk_jpeg,
    "wrong-size": lambda p: jpeg_via_cv2(p, np.zeros((64, 80, 3), np.uint8)),
    "truncated": truncated_jpeg,
    "garbage-after-the-marker": lambda p: p.write_bytes(b"\xff\xd8\xff" + os.urandom(3000)) and p,
}


@pytest.mark.parametrize(
    "ext, name", [("tif", name) for name in sorted(OTHER_TIFFS)] + [("jpg", name) for name in sorted(OTHER_JPEGS)]
)
def test_other_tiffs_and_jpegs_fall_back_to_cv2(ext, name, tmp_path):
    makers, fast_path = {"tif": (OTHER_TIFFS, decode._plain_tiff_pixels), "jpg": (OTHER_JPEGS, decode._jpeg_pixels)}[
        ext
    ]
    path = makers[name](tmp_path / f"x.{ext}")
    assert fast_path(path.read_bytes()) is None
    assert_same_as_cv2(path)


def test_damaged_files_never_get_other_pixels_than_cv2s(tmp_path):
    """Random damage to headers, tags and data: a fast path either declines or returns exactly cv2's pixels."""
    rng = np.random.default_rng(11)
    bases = [make(tmp_path / f"{name}.tif").read_bytes() for name, make in PLAIN_TIFFS.items()]
    bases += [make(tmp_path / f"{name}.jpg").read_bytes() for name, make in JPEGS.items()]
    taken = 0
    for _ in range(600):
        damaged = bytearray(bases[rng.integers(len(bases))])
        if rng.random() < 0.2:
            damaged = damaged[: rng.integers(len(damaged))]
        else:  # the tags sit at the end of most of these TIFFs, the markers at the start of the JPEGs
            near = rng.choice([8, len(damaged) - 300])
            for at in rng.integers(max(0, near - 8), max(1, min(len(damaged), near + 300)), rng.integers(1, 5)):
                damaged[at] = rng.integers(256)
        blob = bytes(damaged)
        fast = decode._plain_tiff_pixels(blob) if blob[:2] in (b"II", b"MM") else decode._jpeg_pixels(blob)
        if fast is not None:
            taken += 1
            np.testing.assert_array_equal(fast, decode._cv2_decode("damaged", blob))
    assert taken > 50  # the damage often spares what the fast paths read


SAMPLE = Path(
    os.environ.get("HARNESS_PCAM_SAMPLE")
    or Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "pcam-sample"
)


@pytest.mark.skipif(not (SAMPLE / "train").is_dir(), reason=f"pcam-sample not found at {SAMPLE}")
def test_real_pcam_jpegs_decode_as_cv2_decodes_them():
    paths = sorted((SAMPLE / "train").iterdir())[:300] + sorted((SAMPLE / "test").iterdir())[:100]
    for path in paths:
        assert decode._jpeg_pixels(path.read_bytes()) is not None, path
        np.testing.assert_array_equal(
            decode_image(path), decode._cv2_decode(path, path.read_bytes()), err_msg=str(path)
        )


# ----------------------------------------------------------------------------- reading, ids, names


@pytest.mark.parametrize(
    "size", [1, 7, decode._READ_SIZE - 1, decode._READ_SIZE, decode._READ_SIZE + 1, 3 * decode._READ_SIZE]
)
def test_read_file_returns_every_byte(size, tmp_path):
    content = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(content)
    assert bytes(decode._read_file(path)) == content


def test_a_jpeg_larger_than_one_read_decodes(tmp_path):
    """A comment segment pads the file past the read buffer: the rest is read, and the pixels are cv2's."""
    small = jpeg_via_cv2(tmp_path / "small.jpg").read_bytes()
    comment = b"\xff\xfe" + struct.pack(">H", 60_002) + b"x" * 60_000
    big = tmp_path / "big.jpg"
    big.write_bytes(small[:2] + comment + comment + small[2:])
    assert big.stat().st_size > decode._READ_SIZE
    assert_same_as_cv2(big)
    assert isinstance(decoded(big), np.ndarray)


def old_id_rule(value: str) -> bool:
    """check_plain_id's rules before the regex: True when the id is accepted."""
    return not (
        len(value) > data.MAX_ID_LENGTH
        or not value
        or "/" in value
        or "\\" in value
        or "\0" in value
        or value.startswith(".")
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
    )


def test_plain_id_regex_accepts_exactly_what_the_rules_accept():
    values = ["a", "abc123", "a.b", "a..b", "a.", "ü-é_ñ", "日本", "a b", "\u0080x", "x\u200b", "~", "-", "a" * 255]
    values += ["", ".", "..", ".a", "a/b", "/", "a\\b", "a\0b", "a" * 256, "a\n", "\r", "a\x7f", "\x1f", "a\tb"]
    values += [f"x{chr(c)}y" for c in range(0, 160)]
    for value in values:
        assert bool(labels.PLAIN_ID.fullmatch(value)) == old_id_rule(value), repr(value)
        if old_id_rule(value):
            data.check_plain_id(value, "here")
        else:
            with pytest.raises(HarnessError, match=re.escape("here: id ") + ".*is not a plain file name"):
                data.check_plain_id(value, "here")


def test_scan_takes_the_extensions_splitext_takes(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    names = ["a.tif", "b.TIFF", "c.jpeg", "d.Png", "e.jpg.tmp", "f", "..tif", "...jpg", ".tif", "g.h.tif", "i."]
    for name in names:
        (folder / name).write_bytes(b"x")
    expected = {}
    for name in names:
        stem, ext = os.path.splitext(name)
        if ext.lower() in data.IMAGE_EXTENSIONS:
            expected[stem] = str(folder / name)
    assert data.scan_folder(tmp_path, "train") == expected


# ----------------------------------------------------------------------------- the cache build


def test_build_syncs_in_the_background_and_closes_its_files(make_kaggle, tmp_path, monkeypatch):
    """With a sync after every chunk, the cache is built as usual and no file descriptor is left open."""
    root = make_kaggle(n_train=40, n_test=10)
    syncs = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd):
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(decode_pool, "FLUSH_EVERY", 1)
    monkeypatch.setattr(decode_pool, "MIN_CHUNK", 4)
    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    before = set(os.listdir("/proc/self/fd"))
    ds = data.load_dataset(root, tmp_path / "cache", progress=False, workers=2)
    assert syncs
    reference = np.stack([decode_image(p) for p in sorted((root / "test").iterdir())])
    np.testing.assert_array_equal(ds.test.images, reference)
    del ds  # its memory maps hold a descriptor each
    gc.collect()
    for _ in range(100):  # the flush threads close their file after their last sync, without being waited for
        if set(os.listdir("/proc/self/fd")) <= before:
            break
        time.sleep(0.01)
    assert set(os.listdir("/proc/self/fd")) <= before


def test_a_failed_background_sync_stops_the_build(make_kaggle, tmp_path, monkeypatch):
    """The kernel reports a write error to one sync only: the build must fail on it, and publish no cache."""
    root = make_kaggle(n_train=40, n_test=10)

    def failing_fdatasync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(decode_pool, "FLUSH_EVERY", 1)
    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    with pytest.raises(OSError, match="Input/output error"):
        data.load_dataset(root, tmp_path / "cache", progress=False, workers=2)
    assert list((tmp_path / "cache").iterdir()) == []


def test_chunks_cover_every_image_once():
    for n in (1, 15, 16, 17, 300, 2000, 20_001):
        for workers in (1, 2, 8):
            chunks = decode_pool.chunks(n, workers)
            assert chunks[0][0] == 0 and chunks[-1][1] == n
            assert all(a[1] == b[0] and a[0] < a[1] <= a[0] + decode_pool.CHUNK for a, b in itertools.pairwise(chunks))


def test_decode_image_into_rejects_nothing_it_would_not_reject_otherwise(tmp_path):
    """Decoding into a buffer keeps the one-line errors: a broken file raises, naming it."""
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(50))
    with pytest.raises(HarnessError, match=re.escape(str(path))):
        decode_image(path, np.zeros((96, 96, 3), np.uint8))
