"""Every ``data:`` recipe in docs/datasets.md builds as written: the exports it names are made from a
few CamVid test labels at those paths, and each spec is read back through ``build_dataset``."""

import re
import warnings
from pathlib import Path

import numpy as np
import yaml
from annotation_exports import to_coco, to_cvat, to_labelme, to_yolo
from conftest import require_dataset

import segkit.data as D

DOC = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"


def recipes() -> list[dict]:
    """The ``data:`` blocks of the section "Exports of annotation tools"."""
    text = DOC.read_text()
    section = text.split("## Exports of annotation tools", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return [yaml.safe_load(b)["data"] for b in blocks if "data:" in b]


def _exports(root: Path):
    src = D.SplitDataset(require_dataset("camvid"), "test")
    pairs = [(src.samples[i][0], D.read_label(src.samples[i][1])) for i in range(6)]
    exports = root / "exports"
    for split, part in (("train", pairs[:4]), ("val", pairs[4:])):
        to_coco(part, src.classes, exports / "coco" / split, background=None)
        (exports / "coco" / split / "annotations.json").rename(exports / "coco" / f"{split}.json")
    (exports / "coco" / "images").mkdir()
    for split in ("train", "val"):
        for f in (exports / "coco" / split / "images").iterdir():
            f.rename(exports / "coco" / "images" / f.name)
    to_cvat(pairs[:4], src.classes, src.palette, exports / "cvat", split="train")
    to_cvat(pairs[4:], src.classes, src.palette, exports / "cvat", split="val")
    names = ["road", "car"]  # the LabelMe recipe's classes: CamVid's road (3) and car (8)
    lm = [(p, np.select([label == 3, label == 8], [1, 2], 0).astype(np.uint8)) for p, label in pairs]
    to_labelme(lm, ["background", *names], exports / "labelme", background=0)
    to_yolo(pairs[:4], src.classes, exports / "yolo", split="train", background=None)
    to_yolo(pairs[4:], src.classes, exports / "yolo", split="val", background=None)
    data = yaml.safe_load((exports / "yolo" / "data.yaml").read_text())
    data["train"] = "images/train"
    (exports / "yolo" / "data.yaml").write_text(yaml.safe_dump(data))
    import datasets

    def hf(part):
        d = datasets.Dataset.from_dict(
            {"image": [p for p, _ in part], "annotation": [str(s) for s in part_labels(part)]}
        )
        return d.cast_column("image", datasets.Image()).cast_column("annotation", datasets.Image())

    def part_labels(part):
        return [Path(src.samples[[s[0] for s in src.samples].index(p)][1]) for p, _ in part]

    datasets.DatasetDict({"train": hf(pairs[:4]), "validation": hf(pairs[4:])}).save_to_disk(str(exports / "hf"))
    return len(pairs)


def test_every_recipe_in_datasets_md_builds(tmp_path, monkeypatch):
    specs = recipes()
    assert {s["train"]["type"] for s in specs} == {"coco", "cvat", "labelme", "yolo", "hf"}
    _exports(tmp_path)
    monkeypatch.chdir(tmp_path)
    for spec in specs:
        for part, expected in (("train", 4), ("val", 2)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = D.build_dataset(spec[part])
            kind = spec[part]["type"]
            if kind == "labelme":  # one folder of 6 files, split 80/20 at random: 5 / 1
                assert len(ds) == {"train": 5, "val": 1}[part] and ds.classes == ["background", "road", "car"]
            else:
                assert len(ds) == expected, (kind, part, len(ds))
            label = ds.read_raw_label(0)
            assert label.shape == (360, 480) and D.check_dataset(ds).ok, kind
