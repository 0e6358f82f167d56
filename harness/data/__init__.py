"""Kaggle layout: read and validate labels and images, decode each image once into a uint8 memory-mapped cache."""

from harness.data.cache import TMP_PREFIX, ImageSet
from harness.data.dataset import Dataset, load_dataset, rehash_cache
from harness.data.decode import IMAGE_SHAPE, decode_image
from harness.data.labels import (
    LABELS_CSV,
    MAX_ID_LENGTH,
    SUBMISSION_CSV,
    check_plain_id,
    clip,
    read_labels,
    read_submission_ids,
    shown,
)
from harness.data.layout import IMAGE_EXTENSIONS, SYNTHETIC_MARKER, Folder, scan_folder, survey
from harness.data.quality import BLANK_STD, QualityReport

__all__ = [
    "BLANK_STD",
    "IMAGE_EXTENSIONS",
    "IMAGE_SHAPE",
    "LABELS_CSV",
    "MAX_ID_LENGTH",
    "SUBMISSION_CSV",
    "SYNTHETIC_MARKER",
    "TMP_PREFIX",
    "Dataset",
    "Folder",
    "ImageSet",
    "QualityReport",
    "check_plain_id",
    "clip",
    "decode_image",
    "load_dataset",
    "read_labels",
    "read_submission_ids",
    "rehash_cache",
    "scan_folder",
    "shown",
    "survey",
]
