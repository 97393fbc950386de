"""The export's public names where callers have always imported them; the code is in :mod:`core.datasets`."""

from core.datasets.errors import ExportError
from core.datasets.export_job import ExportStats, export_dataset
from core.datasets.items import CONVERTED_JPEG_QUALITY
from core.datasets.naming import (
    CAPTION_EXTENSIONS,
    CONSUMERS,
    CONVERT_TO_CHOICES,
    CONVERT_TO_JPEG,
    LAYOUT_FORMATS,
    Consumer,
    converted_image_name,
    export_caption_line,
    export_layout,
    kohya_flat_name,
    library_name_candidates,
)
from core.datasets.selection import (
    ONLY_CHOICES,
    CaptionedImage,
    count_captioned_images,
    count_export_split,
    folder_scope,
    iter_captioned_images,
    outdated_images,
    plan_export_split,
)
from core.datasets.staging import EXPORT_JOB, MANIFEST_NAME
from core.datasets.writers import EXPORT_FORMATS
from core.datasets.writers.base import portable_model_ref, portable_origin

__all__ = [
    "CAPTION_EXTENSIONS", "CONSUMERS", "CONVERTED_JPEG_QUALITY", "CONVERT_TO_CHOICES", "CONVERT_TO_JPEG",
    "EXPORT_FORMATS", "EXPORT_JOB", "LAYOUT_FORMATS", "MANIFEST_NAME", "ONLY_CHOICES", "CaptionedImage", "Consumer",
    "ExportError", "ExportStats", "converted_image_name", "count_captioned_images", "count_export_split",
    "export_caption_line", "export_dataset", "export_layout", "folder_scope", "iter_captioned_images",
    "kohya_flat_name", "library_name_candidates", "outdated_images", "plan_export_split", "portable_model_ref",
    "portable_origin",
]
