"""Image sizes as file headers declare them (TIFF, PNG, JPEG, BMP), read before cv2 decodes anything."""

from __future__ import annotations

import struct
from pathlib import Path

from harness.errors import HarnessError

IMAGE_SHAPE = (96, 96, 3)


def shape_kind(shape: tuple[int, ...]) -> str:
    """What a wrong shape is, for a message: grayscale, 4 channels (RGBA), ..."""
    kind = {2: "grayscale", 3: f"{shape[-1]} channels"}.get(len(shape), f"{len(shape)} dimensions")
    return "4 channels (RGBA)" if len(shape) == 3 and shape[-1] == 4 else kind


def check_declared_size(path: str | Path, data: memoryview | bytes) -> None:
    """Refuse a file whose header does not declare 96x96 pixels, or whose size cannot be read from its header.

    The one size check every decode by cv2 goes through. It reads only header bytes already in memory (a few
    fields), so a decompression bomb is refused in microseconds instead of being decoded (a 2.6 MB PNG declaring
    30000x30000 took 40 s and 5.4 GB). Formats whose size is not read here are refused: cv2 would decode them
    blind.
    """
    head = bytes(data[:8])
    parse = next((parse for magic, parse in _DECLARED if head.startswith(magic)), None)
    if parse is None:
        raise HarnessError(f"{path}: not a readable image (not a TIFF, PNG, JPEG or BMP file; {len(data)} bytes)")
    try:
        declared = parse(data)
    except (struct.error, IndexError, ValueError):
        declared = None
    if declared is None:
        raise HarnessError(f"{path}: not a readable image (corrupt, truncated or not an image; {len(data)} bytes)")
    name, height, width, channels = declared
    if name == "TIFF tile":
        raise HarnessError(
            f"{path}: its TIFF header declares tiles of {width}x{height} pixels; a 96x96 image needs none larger"
            f" than {_MAX_TILE}x{_MAX_TILE} (refused before decoding)"
        )
    if (height, width) != IMAGE_SHAPE[:2]:
        shape = (height, width) if channels == 1 else (height, width, channels)
        raise HarnessError(
            f"{path}: shape {shape} ({shape_kind(shape)}); expected 96x96x3 RGB (the size its {name} header declares;"
            " refused before decoding)"
        )


_Declared = tuple[str, int, int, int] | None  # (format, height, width, channels), or None: an unreadable header


def _png_declared(data: memoryview | bytes) -> _Declared:
    # The signature, then IHDR, which must come first: length 13, width, height, bit depth, colour type.
    length, kind, width, height, _, colour = struct.unpack_from(">I4sIIBB", data, 8)
    if length != 13 or kind != b"IHDR":
        return None
    return "PNG", height, width, {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}.get(colour, 3)


# JPEG markers: SOF0-SOF15 less DHT (C4), JPG (C8) and DAC (CC) hold the frame size; these stand alone (no length).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _jpeg_declared(data: memoryview | bytes) -> _Declared:
    """The frame header's size, found as libjpeg finds it: marker to marker, skipping segments by their length."""
    at, end = 2, len(data)
    while True:
        while at < end and data[at] != 0xFF:  # stray bytes: libjpeg skips them (with a warning)
            at += 1
        while at < end and data[at] == 0xFF:  # fill bytes
            at += 1
        if at >= end:
            return None
        marker = data[at]
        at += 1
        if marker == 0 or marker in _STANDALONE:  # a stuffed zero or a marker without a segment
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, at)
        if length < 2:
            return None
        if marker in _SOF:
            _, height, width, components = struct.unpack_from(">BHHB", data, at + 2)
            return "JPEG", height, width, 3 if components >= 3 else components
        at += length


# TIFF field types that libtiff reads as an unsigned size: type -> (struct code, bytes).
_TIFF_INTEGERS = {
    1: ("B", 1),
    3: ("H", 2),
    4: ("I", 4),
    6: ("b", 1),
    8: ("h", 2),
    9: ("i", 4),
    13: ("I", 4),
    16: ("Q", 8),
    17: ("q", 8),
    18: ("Q", 8),
}


def _tiff_declared(data: memoryview | bytes) -> _Declared:
    """ImageWidth, ImageLength and SamplesPerPixel of the first directory (classic TIFF or BigTIFF)."""
    order = "<" if data[:2] == b"II" else ">"
    (version,) = struct.unpack_from(order + "H", data, 2)
    if version == 42:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (n,) = struct.unpack_from(order + "H", data, ifd)
        entry, count_code, inline, first = 12, "I", 4, ifd + 2
    elif version == 43:  # BigTIFF: 8-byte offsets and counts
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (n,) = struct.unpack_from(order + "Q", data, ifd)
        entry, count_code, inline, first = 20, "Q", 8, ifd + 8
    else:
        return None
    values: dict[int, int] = {}
    for at in range(first, first + entry * min(n, len(data) // entry + 1), entry):
        tag, kind = struct.unpack_from(order + "HH", data, at)
        if tag not in _TIFF_SIZE_TAGS or tag in values:  # libtiff keeps the first of a repeated tag
            continue
        (count,) = struct.unpack_from(order + count_code, data, at + 4)
        code = _TIFF_INTEGERS.get(kind)
        if code is None or count != 1:  # libtiff refuses these for a size
            return None
        where = at + 8 if inline == 4 else at + 12
        if code[1] > inline:
            (where,) = struct.unpack_from(order + ("I" if inline == 4 else "Q"), data, where)
        (value,) = struct.unpack_from(order + code[0], data, where)
        if value < 0:
            return None
        values[tag] = value
    if 256 not in values or 257 not in values:
        return None
    tile = (values.get(323, 0), values.get(322, 0))
    if max(tile) > _MAX_TILE:  # cv2 allocates a whole tile (up to 1 GB) before reading a 96x96 image from it
        return "TIFF tile", *tile, values.get(277, 1)
    return "TIFF", values[257], values[256], values.get(277, 1)


_TIFF_SIZE_TAGS = (256, 257, 277, 322, 323)  # ImageWidth, ImageLength, SamplesPerPixel, TileWidth, TileLength
_MAX_TILE = 1024


def _bmp_declared(data: memoryview | bytes) -> _Declared:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
    elif header >= 16:
        width, height, _, bits = struct.unpack_from("<iiHH", data, 18)
    else:
        return None
    return "BMP", abs(height), width, 4 if bits == 32 else 3  # a negative height: rows stored top-down


_DECLARED = (
    (b"II*\0", _tiff_declared),
    (b"MM\0*", _tiff_declared),
    (b"II+\0", _tiff_declared),
    (b"MM\0+", _tiff_declared),
    (b"\x89PNG\r\n\x1a\n", _png_declared),
    (b"\xff\xd8", _jpeg_declared),
    (b"BM", _bmp_declared),
)
