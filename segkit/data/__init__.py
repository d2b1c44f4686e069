"""Data: image/label reading with guard-rails, datasets, reference transforms, dataset checks.

Quick start::

    from segkit.data import SplitDataset, TrainTransform, check_dataset
    ds = SplitDataset("/work/shared/data/camvid", "train",
                      transform=TrainTransform(scale=(480, 360), crop_size=(256, 256)))
    print(check_dataset(ds).table())
"""
from segkit.data import meta
from segkit.data.checks import DatasetReport, check_dataset
from segkit.data.datasets import (
    ADE20K, DATASETS, COCOStuff10k, COCOStuff164k, Cityscapes, FolderDataset, ISAID, PascalContext, PascalVOC,
    SegDataset, SplitDataset, build_dataset, make_label_lut,
)
from segkit.data.io import (
    DataError, ImageInfo, colour_to_index, convert_colour_masks, index_to_colour, probe_image, read_image, read_label,
)
from segkit.data.transforms import (
    TestTransform, TrainTransform, cat_max_ratio_crop_box, normalize_to_tensor, photometric_distortion, random_crop_box,
    random_scale, rescale_size,
)

__all__ = [
    "DataError", "read_image", "read_label", "probe_image", "ImageInfo", "colour_to_index", "index_to_colour",
    "convert_colour_masks",
    "SegDataset", "SplitDataset", "FolderDataset", "ADE20K", "Cityscapes", "PascalVOC", "PascalContext",
    "COCOStuff164k", "COCOStuff10k", "ISAID", "DATASETS", "build_dataset", "make_label_lut",
    "TrainTransform", "TestTransform", "rescale_size", "random_scale", "random_crop_box", "cat_max_ratio_crop_box",
    "photometric_distortion", "normalize_to_tensor",
    "check_dataset", "DatasetReport", "meta",
]
