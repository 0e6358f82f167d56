"""One image file -> 96x96x3 uint8 RGB: fast paths for uncompressed TIFF and JPEG, OpenCV for everything else."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from harness.data.headers import IMAGE_SHAPE, check_declared_size, shape_kind
from harness.errors import HarnessError

__all__ = ["IMAGE_SHAPE", "check_declared_size", "decode_image"]

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
        raise HarnessError(f"{path}: shape {img.shape} ({shape_kind(img.shape)}); expected 96x96x3 RGB")
    # cv2 decodes to BGR; cvtColor in place is far faster than [..., ::-1] and allocates nothing.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img if out is None else out)


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
