"""Data: image/label reading with guard-rails, datasets, reference transforms, dataset checks.

Imports no PyTorch and nothing from :mod:`segkit.models` (the torch-free ONNX path uses it);
transforms import torch only when they build tensors.

Quick start::

    from segkit.data import SplitDataset, TrainTransform, check_dataset
    ds = SplitDataset("${SEGKIT_DATA}/camvid", "train",
                      transform=TrainTransform(scale=(480, 360), crop_size=(256, 256)))
    print(check_dataset(ds).table())
"""

from segkit.data import meta
from segkit.data.build import DATASETS, build_dataset
from segkit.data.checks import DatasetReport, check_dataset
from segkit.data.convert import convert_to_split_layout
from segkit.data.datasets import (
    ADE20K,
    DEFAULT_DATA_DIR,
    ISAID,
    Cityscapes,
    COCOStuff10k,
    COCOStuff164k,
    FolderDataset,
    PascalContext,
    PascalVOC,
    SegDataset,
    SplitDataset,
    data_dir,
    make_label_lut,
    resolve_root,
)
from segkit.data.io import (
    DataError,
    ImageInfo,
    colour_to_index,
    convert_colour_masks,
    index_to_colour,
    probe_image,
    read_image,
    read_label,
)
from segkit.data.transforms import (
    MIN_SIDE,
    TestTransform,
    TrainTransform,
    cat_max_ratio_crop_box,
    normalize_to_array,
    normalize_to_tensor,
    photometric_distortion,
    random_crop_box,
    random_scale,
    rescale_size,
)

__all__ = [
    "convert_to_split_layout",
    "DataError",
    "read_image",
    "read_label",
    "probe_image",
    "ImageInfo",
    "colour_to_index",
    "index_to_colour",
    "convert_colour_masks",
    "DEFAULT_DATA_DIR",
    "data_dir",
    "resolve_root",
    "SegDataset",
    "SplitDataset",
    "FolderDataset",
    "ADE20K",
    "Cityscapes",
    "PascalVOC",
    "PascalContext",
    "COCOStuff164k",
    "COCOStuff10k",
    "ISAID",
    "DATASETS",
    "build_dataset",
    "make_label_lut",
    "TrainTransform",
    "TestTransform",
    "rescale_size",
    "random_scale",
    "random_crop_box",
    "cat_max_ratio_crop_box",
    "photometric_distortion",
    "normalize_to_tensor",
    "normalize_to_array",
    "MIN_SIDE",
    "check_dataset",
    "DatasetReport",
    "meta",
]
