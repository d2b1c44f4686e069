"""The RSSeg family: representation separation for semantic segmentation with ViTs (Hong et al.).

RSSeg on plain ViT/BEiT and on CSWin, with its plain-ViT baselines (ViT-Linear, BEiT-Linear,
Segmenter). Everything about the family, in reading order:

* :mod:`.builders` — variants (RSSeg Table 3), the architecture dataclasses, the builders and
  the ablation presets (Tables 4–8);
* :mod:`.paper` — the paper's parameter / GFLOP figures (Tables 4, 5, 7, 9, 11, 12). The paper
  does not say which counter it used; ``flops_convention = "torch"`` (FlopCounterMode, with
  CPU attention) reproduces every figure within 2 % (``docs/model_zoo.md``);
* :mod:`.configs` — the shipped training configs (§4.2–4.4);
* :mod:`.convert` — ViT / BEiT / CSWin checkpoints of every public naming.

The network modules live with the other encoders and heads:
:mod:`segkit.models.backbones.tapped` (the encoders with taps) and :mod:`segkit.models.heads.rsseg`
(LSB, LHF, attention-guided fusion, SASM, DCA). Design notes: ``docs/rsseg.md``.
"""

from ..family import Family
from .builders import (
    PLAIN_ABLATIONS,
    PLAIN_VARIANTS,
    PYRAMID_ABLATIONS,
    PYRAMID_VARIANTS,
    RSSEG_MODELS,
    build_linear,
    build_rsseg_plain,
    build_rsseg_pyramid,
    build_segmenter,
)
from .configs import configs
from .convert import convert
from .paper import PAPER_ROWS

# Parameters with K classes = base + K * per_class (only the classifier, and the class embeddings of
# Segmenter / RSSeg, depend on K): what `segkit models` prints without building anything. Checked
# against meta-device builds by tests/test_cli.py::test_models_parameter_table_matches_the_builds.
PARAM_COUNTS: dict[str, tuple[int, int]] = {
    "rsseg-vit-ti": (6579035, 194),
    "rsseg-vit-b": (98686316, 770),
    "rsseg-vit-l": (326894736, 1026),
    "rsseg-beit-b": (98480300, 770),
    "rsseg-beit-l": (327394960, 1026),
    "rsseg-cswin-t": (22893441, 513),
    "rsseg-cswin-s": (36127617, 513),
    "vit-linear-ti": (5683392, 193),
    "vit-linear-b": (86434560, 769),
    "vit-linear-l": (304149504, 1025),
    "beit-linear-b": (86228544, 769),
    "beit-linear-l": (304649728, 1025),
    "segmenter-vit-ti": (6684288, 194),
    "segmenter-vit-b": (102382080, 770),
    "segmenter-vit-l": (332490752, 1026),
}

FAMILY = Family(
    name="rsseg",
    paper="Representation Separation for Semantic Segmentation with Vision Transformers "
    "(Hong et al., arXiv 2212.13764, 2022)",
    models=RSSEG_MODELS,
    convert=convert,
    flops_convention="torch",
    paper_rows=PAPER_ROWS,
    paper_tolerance=0.02,
    configs=configs,
    param_counts=PARAM_COUNTS,
    citation="@article{hong2022rsseg, title={Representation Separation for Semantic Segmentation with Vision "
    "Transformers}, author={Hong, Yuanduo and Pan, Huihui and Sun, Weichao and Yu, Xinghu and Gao, "
    "Huijun}, journal={arXiv preprint arXiv:2212.13764}, year={2022}}",
)

__all__ = [
    "FAMILY",
    "PARAM_COUNTS",
    "RSSEG_MODELS",
    "PLAIN_VARIANTS",
    "PYRAMID_VARIANTS",
    "PLAIN_ABLATIONS",
    "PYRAMID_ABLATIONS",
    "build_rsseg_plain",
    "build_rsseg_pyramid",
    "build_linear",
    "build_segmenter",
    "PAPER_ROWS",
]
