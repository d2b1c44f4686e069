"""``segkit push`` (issue 24 item 4): the dry run writes exactly the files an upload sends, and the card's YAML
metadata parses with every field the Hub reads (licence with NVIDIA's name and link, library, pipeline tag, tags,
data set, base model, model-index with the test metrics and protocol); the licence file travels with the weights;
licences are inherited, never invented; the upload goes through ``HfApi`` (recorded here: no network)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

import segkit
from segkit.cli import main

METRICS = {  # the shape of segkit eval's metrics.json
    "aAcc": 88.123,
    "mIoU": 43.756,
    "mAcc": 55.5,
    "per_class": "| class | IoU |\n|---|---|\n| sky | 90.00 |",
    "num_images": 233,
    "settings": {"mode": "whole", "crop_size": None, "scales": [1.0], "flip": False, "dataset": "camvid/test"},
}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run's final/ folder: SegFormer-B0 fine-tuned from the registry's NVIDIA MiT-B0 weights, with its last
    validation stored, and the metrics.json of its test evaluation."""
    root = tmp_path_factory.mktemp("push")
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", 3, class_names=["sky", "road", "car"])
    model.train_config = {
        "model": "segformer-b0",
        "pretrained": "mit-b0_imagenet",
        "test_transform": {"scale": [480, 360], "keep_ratio": True, "size_divisor": 32},
        "eval": {"mode": "whole"},
    }
    model.eval_results = {"aAcc": 80.0, "mIoU": 40.0, "settings": {"mode": "whole", "dataset": "camvid/val"}}
    model.save_pretrained(root / "final")
    (root / "test").mkdir()
    (root / "test" / "metrics.json").write_text(json.dumps(METRICS))
    return root


def test_dry_run_card_carries_every_field_and_the_licence_file(run_folder, tmp_path, capsys):
    out = tmp_path / "hub"
    rc = main(["push", str(run_folder / "final"), "me/segformer-b0-camvid", "--metrics", str(run_folder / "test"),
               "--dry-run", str(out)])  # fmt: skip
    printed = capsys.readouterr().out.split()
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["LICENSE", "README.md", "config.json", "model.safetensors"]
    assert sorted(Path(p).name for p in printed) == files  # it says what it wrote
    meta = front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "segkit" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["license"] == "other" and meta["license_name"] == "nvidia-source-code-license"
    assert meta["license_link"] == "https://github.com/NVlabs/SegFormer/blob/master/LICENSE"
    assert {"semantic-segmentation", "segkit", "segformer", "segformer-b0"} <= set(meta["tags"])
    assert meta["datasets"] == ["camvid"]
    assert meta["base_model"] == "nvidia/mit-b0"  # the Hub repo of the registry entry mit-b0_imagenet
    (index,) = meta["model-index"]
    assert index["name"] == "me/segformer-b0-camvid"
    (result,) = index["results"]
    assert result["task"]["type"] == "image-segmentation"
    assert result["dataset"] == {"type": "camvid", "name": "camvid", "split": "test"}
    metrics = {m["name"]: m for m in result["metrics"]}
    assert metrics["mIoU"]["type"] == "mean_iou" and metrics["mIoU"]["value"] == 43.76
    assert metrics["aAcc"]["value"] == 88.12 and metrics["mAcc"]["value"] == 55.5
    args = metrics["mIoU"]["args"]  # the test protocol the metric was measured with
    assert args["scale"] == [480, 360] and args["mode"] == "whole" and args["flip"] is False
    assert args["num_images"] == 233
    licence = (out / "LICENSE").read_text()
    assert "NVIDIA Source Code License" in licence and "non-commercial" in licence
    assert "https://github.com/NVlabs/SegFormer/blob/master/LICENSE" in licence and "mit-b0_imagenet" in licence
    # the weights are the folder's
    a, b = segkit.from_pretrained(out), segkit.from_pretrained(run_folder / "final")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # an output that holds files is refused, nothing touched
    before = (out / "README.md").read_bytes()
    assert main(["push", str(run_folder / "final"), "me/x", "--dry-run", str(out)]) == 2
    assert (out / "README.md").read_bytes() == before


def test_upload_sends_exactly_the_dry_run_files(run_folder, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = {}

    class Recorder:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)

        def create_branch(self, repo_id, *, branch, exist_ok=False):
            calls["branch"] = (repo_id, branch, exist_ok)

        def upload_folder(self, *, folder_path, repo_id, commit_message, revision=None):
            calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls["upload"] = (repo_id, revision, commit_message)
            return type("Info", (), {"commit_url": "https://huggingface.co/me/m/commit/0123abc"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    final, metrics = str(run_folder / "final"), str(run_folder / "test" / "metrics.json")
    args = ["push", final, "me/m", "--metrics", metrics, "--private", "--revision", "v2", "--message", "first"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == "https://huggingface.co/me/m/commit/0123abc"
    assert calls["create"] == ("me/m", True, True) and calls["branch"] == ("me/m", "v2", True)
    assert calls["upload"] == ("me/m", "v2", "first")
    assert main(["push", final, "me/m", "--metrics", metrics, "--dry-run", str(tmp_path / "dry")]) == 0
    dry = {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}
    assert set(dry) == set(calls["files"]) == {"LICENSE", "README.md", "config.json", "model.safetensors"}
    for name in ("LICENSE", "README.md", "config.json"):
        assert dry[name] == calls["files"][name], name  # byte for byte what was uploaded
    # safetensors writes its metadata map in no fixed order: the same tensors and metadata, read back
    (tmp_path / "sent.safetensors").write_bytes(calls["files"]["model.safetensors"])
    sent, kept = safe_open(tmp_path / "sent.safetensors", "pt"), safe_open(tmp_path / "dry" / "model.safetensors", "pt")
    assert sent.metadata() == kept.metadata() and sorted(sent.keys()) == sorted(kept.keys())
    assert all(torch.equal(sent.get_tensor(k), kept.get_tensor(k)) for k in sent.keys())

    class Offline(Recorder):
        def create_repo(self, *a, **k):
            raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    capsys.readouterr()
    assert main(["push", final, "me/m"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("segkit push: error: hf://me/m: upload failed: the Hub cannot be reached") and "\n" not in err


def test_licence_is_inherited_or_asked_for_never_invented(run_folder, tmp_path, capsys):
    final = str(run_folder / "final")
    assert main(["push", final, "me/m", "--license", "apache-2.0", "--dry-run", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "NVIDIA Source Code License" in err and "cannot be published under another licence" in err
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())

    scratch = segkit.build_model("segformer-b0", 3, class_names=["sky", "road", "car"])
    scratch.save_pretrained(tmp_path / "scratch")
    assert main(["push", str(tmp_path / "scratch"), "me/s", "--dry-run", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no licence is recorded" in err and "give --license ID" in err
    full = tmp_path / "LICENSE.txt"
    full.write_text("Apache License\nVersion 2.0, January 2004\n(the full text, as the user has it)\n")
    args = ["push", str(tmp_path / "scratch"), "me/s", "--license", "apache-2.0", "--license-file", str(full)]
    assert main([*args, "--dry-run", str(tmp_path / "c")]) == 0
    meta = front_matter((tmp_path / "c" / "README.md").read_text())
    assert meta["license"] == "apache-2.0" and "base_model" not in meta and "license_name" not in meta
    assert "model-index" not in meta  # nothing was evaluated: no metrics are made up
    assert (tmp_path / "c" / "LICENSE").read_bytes() == full.read_bytes()
    assert main(["push", str(tmp_path / "scratch"), "not-a-repo-id", "--license", "mit"]) == 2


def test_registry_weights_keep_their_licence_and_source(tmp_path, capsys):
    """A converted registry model pushed as is: licence from its source (Apache-2.0 for SegNeXt), LICENSE notice."""
    model = segkit.build_model("segnext-t", 150)
    model.source = {"registry": "segnext-t_ade20k-512", "licence": segkit.models.segnext.SEGNEXT_LICENCE,
                    "source": "https://download.openmmlab.com/x.pth", "dataset": "ade20k", "miou": 41.5}  # fmt: skip
    model.save_pretrained(tmp_path / "m")
    assert main(["push", str(tmp_path / "m"), "me/segnext-t-ade", "--dry-run", str(tmp_path / "d")]) == 0
    meta = front_matter((tmp_path / "d" / "README.md").read_text())
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["ade20k"]
    assert "Apache-2.0" in (tmp_path / "d" / "LICENSE").read_text()
    assert segkit.from_pretrained(tmp_path / "d").num_classes == 150
