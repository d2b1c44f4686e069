"""Datasets read as annotation tools export them, one module per format (``data:`` spec ``type``):

==========  ==========================================================================
``coco``    COCO JSON — polygons, RLE, ``iscrowd`` (:class:`~segkit.data.formats.coco.CocoDataset`)
``yolo``    Ultralytics segmentation: ``data.yaml`` + ``labels/*.txt`` polygons
            (:class:`~segkit.data.formats.yolo.YoloDataset`)
``labelme`` a folder of LabelMe ``*.json`` (:class:`~segkit.data.formats.labelme.LabelMeDataset`)
``cvat``    CVAT's "Segmentation mask 1.1" colour masks + ``labelmap.txt``
            (:class:`~segkit.data.formats.cvat.CvatMaskDataset`; read as stored, nothing drawn)
``hf``      a Hugging Face ``datasets`` dataset: ``save_to_disk`` folder, parquet / arrow, cached
            Hub id (:class:`~segkit.data.formats.hf.HFDataset`; read as stored)
==========  ==========================================================================

Labels are drawn from the annotations **on the fly**, when a sample is read, not once into a
cache: a CamVid-sized label of about a hundred regions takes 10–40 ms to draw on a 2-core machine
(``benchmarks/results/format_roundtrip.md``), and ``train.preload`` draws each label once per run
and keeps it in memory. So there is no cache that could go stale when the export changes, and
nothing is written next to the user's data. ``segkit convert-data`` writes them out as index PNGs
for those who want to look at or version them (or to skip the drawing in long runs without preload).

What every format shares (:class:`AnnotatedDataset`): the class list (``classes``, else the
export's, with a ``background`` class 0 for pixels that no annotation covers, or ``background:
null`` to ignore them), the drawing order of overlapping shapes (``order: file`` — later on top,
as the tools draw them — or ``area`` — smaller on top), and structural errors found when the
dataset is built, each naming the file (and annotation id / line) and the problem.
"""

from segkit.data.formats.base import AnnotatedDataset
from segkit.data.formats.coco import CocoDataset
from segkit.data.formats.cvat import CvatMaskDataset
from segkit.data.formats.hf import HFDataset
from segkit.data.formats.labelme import LabelMeDataset
from segkit.data.formats.yolo import YoloDataset

__all__ = ["AnnotatedDataset", "CocoDataset", "CvatMaskDataset", "HFDataset", "LabelMeDataset", "YoloDataset"]
