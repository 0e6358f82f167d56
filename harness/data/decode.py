"""One image file -> 96x96x3 uint8 RGB: fast paths for uncompressed TIFF and JPEG, OpenCV for everything else."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from harness.errors import HarnessError

IMAGE_SHAPE = (96, 96, 3)

# A corrupt file is reported once, as a one-line HarnessError: libtiff's own complaints would add lines to stderr.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def decode_image(path: str | Path, out: np.ndarray | None = None) -> np.ndarray:
    """Decode one image file to a 96x96x3 uint8 RGB array, or raise a HarnessError naming the file.

    `out`, a C-contiguous 96x96x3 uint8 array, receives the pixels and is returned; by default a new array does.

    Two fast paths give the pixels cv2 gives, for less: an uncompressed 96x96 RGB TIFF (Kaggle's files) is its
    own pixels, and a baseline or progressive YCbCr JPEG goes through simplejpeg (libjpeg-turbo, RGB out, no
    colour conversion afterwards). cv2 decodes everything else, and anything the fast paths refuse, so every
    unusual or broken file meets the same checks and the same messages as before.

    Nothing is decoded before its size is known to be 96x96: the fast paths take only files whose header says so,
    and cv2 gets a file only after `check_declared_size` has read the size from its header (bounded time and
    memory: a 2 MB PNG may declare 30000x30000 pixels).
    """
    try:
        data = _read_file(path)
    except OSError as e:
        raise HarnessError(f"{path}: cannot read the file ({e.strerror or e})") from None
    if not data:
        raise HarnessError(f"{path}: the file is empty (0 bytes)")
    head = bytes(data[:4])
    if head == b"II*\0" or head == b"MM\0*":
        pixels = _plain_tiff_pixels(data)  # a view of `data`, which the next read overwrites: copied
        if pixels is not None:
            if out is None:
                return pixels.copy()
            np.copyto(out, pixels)
            return out
    elif head[:3] == b"\xff\xd8\xff":
        pixels = _jpeg_pixels(data, out)
        if pixels is not None:
            return pixels
    return _cv2_decode(path, data, out)


def _cv2_decode(path: str | Path, data: memoryview | bytes, out: np.ndarray | None = None) -> np.ndarray:
    check_declared_size(path, data)  # before cv2 allocates or decodes anything
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        # UNCHANGED keeps grayscale, alpha and 16-bit images as they are, so they can be refused.
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise HarnessError(f"{path}: not a readable image (corrupt, truncated or not an image; {buf.size} bytes)")
    if img.dtype != np.uint8:
        raise HarnessError(f"{path}: pixels are {img.dtype} ({img.dtype.itemsize * 8}-bit); expected 8-bit uint8")
    if img.shape != IMAGE_SHAPE:
        raise HarnessError(f"{path}: shape {img.shape} ({_kind(img.shape)}); expected 96x96x3 RGB")
    # cv2 decodes to BGR; cvtColor in place is far faster than [..., ::-1] and allocates nothing.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img if out is None else out)


def _kind(shape: tuple[int, ...]) -> str:
    kind = {2: "grayscale", 3: f"{shape[-1]} channels"}.get(len(shape), f"{len(shape)} dimensions")
    return "4 channels (RGBA)" if len(shape) == 3 and shape[-1] == 4 else kind


# ----------------------------------------------------------------------------- declared size, before decoding


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
            f"{path}: shape {shape} ({_kind(shape)}); expected 96x96x3 RGB (the size its {name} header declares;"
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

# No image file of 96x96 pixels needs more: a larger file is refused before it is read into memory.
MAX_FILE_BYTES = 64 << 20
_READ_SIZE = 1 << 16  # one read takes a whole Kaggle .tif (27,830 bytes) or sample .jpg (~7 KB)
_thread = threading.local()


def _read_file(path: str | Path) -> memoryview | bytes:
    """The file's bytes, read into this thread's reusable buffer: valid until the thread's next call.

    A read into a preallocated buffer costs a third of `open().read()`, which sizes, allocates and wraps a new
    bytes object per file.
    """
    buf = getattr(_thread, "buf", None)
    if buf is None:
        buf = _thread.buf = memoryview(bytearray(_READ_SIZE))
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        n = 0
        while n < _READ_SIZE:
            got = os.readv(fd, (buf[n:],))
            if not got:
                return buf[:n]
            n += got
        # A larger file than any patch: read the rest as it comes, up to MAX_FILE_BYTES.
        size = os.fstat(fd).st_size
        if size > MAX_FILE_BYTES:
            raise HarnessError(
                f"{path}: the file is {size:,} bytes; no 96x96 image needs more than {MAX_FILE_BYTES:,}, refusing it"
            )
        rest, n = [bytes(buf)], _READ_SIZE
        while n <= MAX_FILE_BYTES and (piece := os.read(fd, min(1 << 20, MAX_FILE_BYTES + 1 - n))):
            rest.append(piece)
            n += len(piece)
        if n > MAX_FILE_BYTES:  # it grew while being read
            raise HarnessError(f"{path}: the file grew past {MAX_FILE_BYTES:,} bytes while it was read, refusing it")
        return b"".join(rest)
    finally:
        os.close(fd)


def _jpeg_pixels(data: memoryview | bytes, out: np.ndarray | None = None) -> np.ndarray | None:
    """A 96x96 YCbCr JPEG's RGB pixels via simplejpeg; None for anything else, or anything it refuses.

    libjpeg-turbo with the accurate DCT and smooth upsampling, as cv2 uses: the same pixels. Grayscale, CMYK and
    RGB-coded JPEGs go to cv2, which decodes them differently (or refuses them); so does a file with any fault
    (strict mode turns libjpeg's warnings, e.g. a truncated file, into an error).
    """
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if height != IMAGE_SHAPE[0] or width != IMAGE_SHAPE[1] or colorspace != "YCbCr":
            return None
        pixels = simplejpeg.decode_jpeg(
            data, colorspace="RGB", fastdct=False, fastupsample=False, buffer=out, strict=True
        )
        return pixels if out is None else out  # with a buffer, simplejpeg returns a new view of it
    except Exception:  # ValueError for a fault; whatever else it may raise, cv2 decides
        return None


_RGB_BYTES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
_ROW_BYTES = IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
_TIFF_FORMATS = {3: ("H", 2), 4: ("I", 4)}  # SHORT and LONG: the only types the tags read here may have
# Tags that must hold exactly these values (or be absent, when the value is TIFF's default): an 8-bit unsigned,
# uncompressed, chunky RGB image stored top-left first, with no predictor and no extra sample.
_TIFF_REQUIRED = {
    256: ((IMAGE_SHAPE[1],), None),  # ImageWidth
    257: ((IMAGE_SHAPE[0],), None),  # ImageLength
    259: ((1,), (1,)),  # Compression: none
    262: ((2,), None),  # PhotometricInterpretation: RGB
    266: ((1,), (1,)),  # FillOrder
    274: ((1,), (1,)),  # Orientation
    277: ((3,), (1,)),  # SamplesPerPixel
    284: ((1,), (1,)),  # PlanarConfiguration: contiguous
    317: ((1,), (1,)),  # Predictor: none
}
# Tags that may hold any of these values: tag -> (allowed, TIFF's default when absent).
_TIFF_ANY_OF = {
    258: (((8,), (8, 8, 8)), (1,)),  # BitsPerSample: 8 per sample
    339: (((1,), (1, 1, 1)), (1,)),  # SampleFormat: unsigned
}
_TIFF_ABSENT = (322, 323, 324, 325, 338)  # tiles (TileWidth, TileLength, TileOffsets, TileByteCounts), ExtraSamples
_IFD_STRUCTS: dict[tuple[str, int], struct.Struct] = {}


def _plain_tiff_pixels(data: memoryview | bytes) -> np.ndarray | None:
    """A view of an uncompressed 96x96 8-bit RGB baseline TIFF's pixels, straight from its strips; None otherwise.

    Kaggle's .tif files are exactly that: their pixels are the file's bytes in RGB order, which is what cv2's
    decode followed by BGR->RGB gives, for a fraction of its cost. Any other layout, any tag out of place or any
    strip outside the file returns None, and cv2 decides. Files from one writer share their layout, so a layout
    already read (same size, header and tag entries, same values stored outside the entries) is not read again.
    """
    size = len(data)
    if size < 8:
        return None
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    if ifd + 2 > size:
        return None
    (n,) = struct.unpack_from(order + "H", data, ifd)
    end = ifd + 2 + 12 * n
    if n == 0 or end > size:
        return None
    key = b"%d\0" % size + bytes(data[:8]) + bytes(data[ifd:end])
    layout = _TIFF_LAYOUTS.get(key)
    if layout is None or any(data[at : at + len(value)] != value for at, value in layout[1]):
        layout = _tiff_layout(data, order, ifd, n)
        if len(_TIFF_LAYOUTS) < 64:
            _TIFF_LAYOUTS[key] = layout
    start = layout[0]
    if start is None:
        return None
    return np.frombuffer(data, dtype=np.uint8, count=_RGB_BYTES, offset=start).reshape(IMAGE_SHAPE)


# Tag entries (with the header and file size) -> where the pixels start (None: not a plain TIFF), and the values
# stored outside the entries that this depends on, as (offset, bytes).
_TIFF_LAYOUTS: dict[bytes, tuple[int | None, tuple[tuple[int, bytes], ...]]] = {}


def _tiff_layout(
    data: memoryview | bytes, order: str, ifd: int, n: int
) -> tuple[int | None, tuple[tuple[int, bytes], ...]]:
    size = len(data)
    key = (order, n)
    entries = _IFD_STRUCTS.get(key)
    if entries is None:
        entries = _IFD_STRUCTS[key] = struct.Struct(order + "HHI4s" * n)
    fields = entries.unpack_from(data, ifd + 2)
    tags: dict[int, tuple[int, ...]] = {}
    read: list[tuple[int, bytes]] = []
    for k in range(0, 4 * n, 4):
        tag, kind, count, raw = fields[k : k + 4]
        if tag in tags:
            return None, ()  # a repeated tag: libtiff's reading of it decides
        if tag not in _TIFF_USED:
            tags[tag] = ()
            continue
        fmt = _TIFF_FORMATS.get(kind)
        if fmt is None or count == 0:
            return None, ()
        nbytes = count * fmt[1]
        if nbytes <= 4:
            tags[tag] = struct.unpack_from(f"{order}{count}{fmt[0]}", raw)
            continue
        (at,) = struct.unpack_from(order + "I", raw)
        if at + nbytes > size:
            return None, ()
        read.append((at, bytes(data[at : at + nbytes])))
        tags[tag] = struct.unpack_from(f"{order}{count}{fmt[0]}", data, at)
    depends = tuple(read)
    for tag, (value, default) in _TIFF_REQUIRED.items():
        if tags.get(tag, default) != value:
            return None, depends
    for tag, (allowed, default) in _TIFF_ANY_OF.items():
        if tags.get(tag, default) not in allowed:
            return None, depends
    if any(tag in tags for tag in _TIFF_ABSENT):
        return None, depends
    rows_per_strip = tags.get(278, (2**32 - 1,))  # the default: one strip
    if len(rows_per_strip) != 1 or rows_per_strip[0] == 0:
        return None, depends
    rows = min(rows_per_strip[0], IMAGE_SHAPE[0])
    offsets, counts = tags.get(273, ()), tags.get(279, ())
    n_strips = -(-IMAGE_SHAPE[0] // rows)
    if len(offsets) != n_strips or len(counts) != n_strips:
        return None, depends
    start = at = offsets[0]
    for i in range(n_strips):
        expected = min(rows, IMAGE_SHAPE[0] - i * rows) * _ROW_BYTES
        if offsets[i] != at or counts[i] != expected:
            return None, depends  # strips apart, out of order, or not exactly their rows: cv2 decides
        at += expected
    if at > size:
        return None, depends
    return start, depends


_TIFF_USED = frozenset([*_TIFF_REQUIRED, *_TIFF_ANY_OF, *_TIFF_ABSENT, 273, 278, 279])
