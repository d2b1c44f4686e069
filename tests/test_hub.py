"""Pretrained weights in one call (segkit.hub), the model card / push_to_hub, and the inference API.

No network exists here: downloads are tested for real against an HTTP server on 127.0.0.1 started
by the test (requests counted), and Hub loading against a Hugging Face cache built by the test
with ``HF_HUB_OFFLINE=1``. Every registry entry is checked without downloading: its architecture
builds, its classes match its data set, and the key names / shapes of its source format convert
strictly into it.
"""

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import segkit
from segkit.data import meta
from segkit.hub import DownloadError
from segkit.models.family import Pretrained
from segkit.models.layers import skip_init

KEYS = Path(__file__).resolve().parent / "data" / "checkpoint-keys"


def listing(name: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (KEYS / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        out[key] = tuple(json.loads(shape))
    return out


# ----------------------------------------------------------------------------- a local "download server"
class _Server:
    def __init__(self, root: Path):
        handler_root, counts = root, {}

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(handler_root), **k)

            def do_GET(self):  # noqa: N802
                counts[self.path] = counts.get(self.path, 0) + 1
                return super().do_GET()

            def log_message(self, *a):
                pass

        self.counts = counts
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server(tmp_path):
    (tmp_path / "srv").mkdir()
    s = _Server(tmp_path / "srv")
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEGKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


def official_segnext_t(path: Path) -> str:
    """A SegNeXt-T checkpoint under mmseg 1.x's key names (from the listing), as mmseg publishes it;
    returns its SHA-256."""
    torch.manual_seed(0)
    state = {k: torch.randn(shape) * 0.02 for k, shape in listing("mmseg_segnext-t.txt").items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 1.0
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(0)
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def entry_at(server):
    """Register a temporary registry entry pointing at the local server; removed afterwards."""
    added = []

    def make(name, filename, sha256):
        e = Pretrained(
            name,
            "segnext-t",
            "ade20k",
            150,
            "Apache-2.0 (test)",
            url=f"{server.url}/{filename}",
            sha256=sha256,
            protocol=dict(scale=(2048, 512), size_divisor=32, mode="whole"),
            miou=41.5,
            arch={"md_r": 16},
        )
        segkit.PRETRAINED[name] = e
        added.append(name)
        return e

    yield make
    for name in added:
        segkit.PRETRAINED.pop(name, None)


# ----------------------------------------------------------------------------- downloads
def test_registry_download_verify_convert_cache_and_no_second_request(server, cache, entry_at):
    sha = official_segnext_t(cache.parent / "srv" / "segnext_t-x.pth")
    entry_at("test-segnext-t_ade20k-512", "segnext_t-x.pth", sha[:8])
    model = segkit.from_pretrained("test-segnext-t_ade20k-512")
    assert server.counts == {"/segnext_t-x.pth": 1}
    assert model.name == "segnext-t" and model.arch["md_r"] == 16 and model.class_names[0] == "wall"
    assert segkit.TestProtocol.of(model).scale == (2048, 512)
    assert (cache / "models" / "test-segnext-t_ade20k-512" / "model.safetensors").is_file()
    # the converted weights are those of a strict load of the official file
    ref = segkit.build_model("segnext-t", 150, md_r=16)
    segkit.load_checkpoint(ref, cache / "downloads" / "segnext_t-x.pth", verbose=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.eval()(x))
    again = segkit.from_pretrained("test-segnext-t_ade20k-512")  # from the converted cache: no request
    assert server.counts == {"/segnext_t-x.pth": 1} and again.source["source"].endswith("segnext_t-x.pth")
    card = (cache / "models" / "test-segnext-t_ade20k-512" / "README.md").read_text()
    assert "segnext-t" in card and "Apache-2.0 (test)" in card and "41.5" in card


def test_a_file_with_the_wrong_hash_is_refused_deleted_and_not_cached(server, cache, entry_at):
    official_segnext_t(cache.parent / "srv" / "bad.pth")
    entry_at("test-bad", "bad.pth", "00000000")
    with pytest.raises(DownloadError, match=r"SHA-256 .* expected 00000000"):
        segkit.from_pretrained("test-bad")
    assert not (cache / "downloads" / "bad.pth").exists() and not (cache / "models" / "test-bad").exists()
    assert not any((cache / "downloads").iterdir())


def test_dead_url_and_offline_name_the_url_and_where_to_put_the_file(server, cache, entry_at, monkeypatch):
    entry_at("test-missing", "missing.pth", "12345678")
    with pytest.raises(
        DownloadError,
        match=r"cannot download http://127\.0\.0\.1:\d+/missing\.pth .* put it at .*"
        r"downloads/missing\.pth",
    ):
        segkit.from_pretrained("test-missing")
    sha = official_segnext_t(cache.parent / "srv" / "t.pth")
    entry_at("test-offline", "t.pth", sha[:8])
    monkeypatch.setenv("SEGKIT_OFFLINE", "1")
    with pytest.raises(
        DownloadError,
        match=r"offline .*/t\.pth is not in the cache: download it by hand and put it "
        r"at .*downloads/t\.pth",
    ):
        segkit.from_pretrained("test-offline")
    assert server.counts.get("/t.pth") is None
    # put there by hand: works offline, still verified
    (cache / "downloads").mkdir(parents=True, exist_ok=True)
    (cache / "downloads" / "t.pth").write_bytes((cache.parent / "srv" / "t.pth").read_bytes())
    assert segkit.from_pretrained("test-offline").num_classes == 150


def test_unknown_names_suggest_registry_entries(cache):
    with pytest.raises(FileNotFoundError, match="did you mean segformer-b0_ade20k-512"):
        segkit.from_pretrained("segformer-b0_ade20k-51")
    with pytest.raises(segkit.CheckpointError, match="ImageNet encoder weights"):
        segkit.from_pretrained("mscan-t_imagenet")


def test_config_pretrained_accepts_registry_names(server, cache, entry_at, synthetic_split, tmp_path):
    """Fine-tuning from official weights is one line: ``pretrained: <registry name>`` (encoder-only too)."""
    sha = official_segnext_t(cache.parent / "srv" / "t.pth")
    entry_at("test-init", "t.pth", sha[:8])
    from segkit.config import config_from_dict
    from segkit.engine.trainer import build_model_from_config

    cfg = config_from_dict(
        {
            "model": "segnext-t",
            "model_args": {"md_r": 16},
            "pretrained": "test-init",
            "pretrained_strict": False,
            "data": {"train": {"type": "split", "root": str(synthetic_split), "split": "train"}},
        }
    )
    model = build_model_from_config(cfg, segkit.data.SplitDataset(synthetic_split, "train"))
    state = torch.load(cache / "downloads" / "t.pth", weights_only=True)["state_dict"]
    assert torch.equal(
        model.state_dict()["backbone.block1.0.attn.proj_1.weight"], state["backbone.block1.0.attn.proj_1.weight"]
    )


# ----------------------------------------------------------------------------- the Hub, offline
HUB_SCRIPT = r"""
import json, sys, torch, segkit
from transformers import SegformerForSemanticSegmentation
m = segkit.from_pretrained("nvidia/segformer-b0-finetuned-test")
assert m.name == "segformer-b0" and m.num_classes == 7 and m.class_names[3] == "label_3", m.class_names
hf = SegformerForSemanticSegmentation.from_pretrained(sys.argv[1]).eval()
x = torch.randn(1, 3, 64, 64)
with torch.no_grad():
    d = (m.encode_decode(x) - hf(pixel_values=x).logits).abs().max().item()
assert d < 1e-4, d
print("ok", d)
"""


def test_transformers_segformer_loads_by_repo_id_from_an_offline_hub_cache(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    cfg = SegformerConfig(
        num_labels=7, id2label={i: f"label_{i}" for i in range(7)}, label2id={f"label_{i}": i for i in range(7)}
    )
    hf = SegformerForSemanticSegmentation(cfg).eval()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--nvidia--segformer-b0-finetuned-test"
    snap = repo / "snapshots" / commit
    hf.save_pretrained(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "SEGKIT_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    r = subprocess.run(
        [sys.executable, "-c", HUB_SCRIPT, str(snap)], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-3000:]
    converted = tmp_path / "cache" / "hub" / "nvidia--segformer-b0-finetuned-test" / commit  # keyed by the commit
    assert (converted / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- every registry entry
def _source_state(e: Pretrained) -> dict:
    """The key names and shapes (meta tensors) of the entry's published file format."""
    from segkit.models.segnext import MSCAN_VARIANTS

    if e.repo_id:  # transformers format (v5 in-memory names; the b0/b2 Hub listings are checked below)
        from transformers import SegformerConfig, SegformerForImageClassification, SegformerForSemanticSegmentation

        from segkit.models.segformer import VARIANTS

        v = VARIANTS[e.model.split("-")[1]]
        cfg = SegformerConfig(
            hidden_sizes=list(v["encoder"]["embed_dims"]),
            depths=list(v["encoder"]["depths"]),
            decoder_hidden_size=v["decoder_dim"],
            num_labels=e.num_classes or 1000,
        )
        cls = SegformerForImageClassification if e.encoder_only else SegformerForSemanticSegmentation
        with torch.device("meta"), skip_init():
            return dict(cls(cfg).state_dict())
    # mmseg 1.x files: segkit's names with mlp.dwconv.dwconv -> mlp.dwconv (the listings confirm the rule)
    with torch.device("meta"), skip_init():
        model = segkit.build_model(e.model, max(e.num_classes, 1), **e.arch)
    state = {k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv."): v for k, v in model.state_dict().items()}
    if e.encoder_only:
        assert tuple(MSCAN_VARIANTS[e.model.split("-")[1]]["depths"]) == model.backbone.depths
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


@pytest.mark.parametrize("e", list(segkit.PRETRAINED.values()), ids=list(segkit.PRETRAINED))
def test_every_registry_entry_builds_and_its_source_format_converts_strictly(e):
    from segkit.models.zoo import family_of

    with torch.device("meta"), skip_init():
        model = segkit.build_model(e.model, max(e.num_classes, 1), **e.arch)
    family = family_of(model)
    assert e in family.pretrained and e.licence and (e.repo_id or (e.url and e.sha256))
    if e.dataset == "ade20k":
        assert e.num_classes == 150 == len(meta.ADE20K_CLASSES) and e.protocol["mode"] == "whole"
    elif e.dataset == "cityscapes":
        assert e.num_classes == 19 == len(meta.CITYSCAPES_CLASSES) and e.protocol["mode"] == "slide"
    else:
        assert e.dataset == "imagenet" and e.encoder_only and e.protocol is None
    if e.protocol:
        segkit.TestProtocol(**e.protocol)  # a valid protocol
    state = _source_state(e)
    converted, fmt, dropped, notes = family.convert(state, model)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    got = {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("num_batches_tracked")}
    if e.encoder_only:
        own = {k: s for k, s in own.items() if k.startswith("backbone.")}
    assert got == own, f"{e.name} ({fmt}): {sorted(set(got) ^ set(own))[:5]}"


@pytest.mark.parametrize("variant,listing_name", [("b0", "hf_segformer-b0.hub.txt"), ("b2", "hf_segformer-b2.hub.txt")])
def test_hub_file_names_of_segformer_convert_strictly(variant, listing_name):
    state = {k: torch.empty(s, device="meta") for k, s in listing(listing_name).items()}
    with torch.device("meta"), skip_init():
        model = segkit.build_model(f"segformer-{variant}", 150)
    converted, fmt, _, _ = segkit.FAMILIES["segformer"].convert(state, model)
    assert fmt == "hf-segformer"
    shapes = {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("num_batches_tracked")}
    assert shapes == {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_models_pretrained_lists_every_entry(capsys):
    assert segkit.cli.main(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in segkit.PRETRAINED) and "non-commercial" in out


def test_docs_list_every_entry_with_source_and_licence():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "pretrained.md").read_text()
    for e in segkit.PRETRAINED.values():
        row = next((line for line in doc.splitlines() if f"`{e.name}`" in line), None)
        assert row is not None, e.name
        assert (e.repo_id or e.url.rsplit("/", 1)[-1]) in row


# ----------------------------------------------------------------------------- model card and push_to_hub
def test_push_to_hub_uploads_weights_config_and_card(monkeypatch, tmp_path):
    import huggingface_hub

    calls = {}

    class Recorder:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, folder_path, repo_id, commit_message, revision=None):
            calls["files"] = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls["repo"] = repo_id
            return "https://huggingface.co/me/tiny/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    model = segkit.build_model("segformer-b0", 3, class_names=["sky", "road", "car"])
    model.eval_results = {
        "aAcc": 90.0,
        "mIoU": 71.25,
        "mAcc": 80.0,
        "per_class": "| class | IoU |\n|---|---|\n| sky | 90.00 |",
    }
    model.train_config = {"model": "segformer-b0", "schedule": {"max_iters": 100}}
    url = model.push_to_hub("me/tiny", token="t0k")
    assert url.endswith("/commit/abc") and calls["create"] == ("me/tiny", False, True) and calls["token"] == "t0k"
    assert set(calls["files"]) == {"model.safetensors", "config.json", "README.md"}
    card = calls["files"]["README.md"].decode()
    assert "| 90.00 | 71.25 |" in card and "SegFormer" in card and "@inproceedings{xie2021segformer" in card
    assert "max_iters: 100" in card and "sky" in card
    local = model.save_pretrained(tmp_path / "m")
    assert (local / "README.md").read_text() == card  # the same card locally


# ----------------------------------------------------------------------------- Segmenter
@pytest.fixture(scope="module")
def camvid_model(tmp_path_factory):
    torch.manual_seed(0)
    m = segkit.build_model("segnext-t", 11)
    m.train_config = {"test_transform": {"scale": [240, 180], "keep_ratio": True, "size_divisor": 32}}
    folder = m.save_pretrained(tmp_path_factory.mktemp("m") / "final")
    return segkit.from_pretrained(folder), folder


def test_segmenter_on_every_input_type_equals_segkit_predict(camvid_model, camvid, tmp_path):
    model, folder = camvid_model
    files = sorted((camvid / "images" / "test").iterdir())[:4]
    assert segkit.cli.main(["predict", str(folder), str(files[0]), "--out", str(tmp_path / "p")]) == 0
    expected = np.array(Image.open(tmp_path / "p" / f"{files[0].stem}_label.png"))
    seg = segkit.Segmenter(model, device="cpu")
    rgb = np.array(Image.open(files[0]).convert("RGB"))
    for x in (files[0], str(files[0]), Image.open(files[0]), rgb, torch.from_numpy(rgb).permute(2, 0, 1)):
        r = seg(x)
        assert r.label.shape == (360, 480) and np.array_equal(r.label, expected), type(x)
    batch = seg(files)
    assert len(batch) == 4
    for f, r in zip(files, batch):
        assert np.array_equal(r.label, seg(f).label)
    r = seg(files[1])
    assert r.overlay().size == (480, 360) and r.classes == model.class_names
    assert abs(sum(r.areas().values()) - 1) < 1e-9
    probs = r.probs()
    assert probs.shape == (11, 360, 480) and np.array_equal(probs.argmax(0), r.label)
    paths = r.save(tmp_path / "s")
    assert [p.name for p in paths] == [f"{files[1].stem}_label.png", f"{files[1].stem}_overlay.png"]
    assert Image.open(paths[0]).size == (480, 360) and Image.open(paths[1]).size[1] >= 360
    with pytest.raises(ValueError, match="input 0: an array must be uint8"):
        seg(rgb.astype(np.float32))


# ----------------------------------------------------------------------------- video
def test_video_overlay_keeps_frames_size_and_rate_and_its_labels(camvid_model, camvid, tmp_path):
    import cv2

    model, folder = camvid_model
    frames = [np.array(Image.open(f).convert("RGB")) for f in sorted((camvid / "images" / "test").iterdir())[:12]]
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 12.5, (480, 360))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    assert segkit.cli.main(["predict", str(folder), str(clip), "--out", str(tmp_path / "v"), "--save-labels"]) == 0
    out = cv2.VideoCapture(str(tmp_path / "v" / "clip_overlay.mp4"))
    assert int(out.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and out.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    assert (int(out.get(cv2.CAP_PROP_FRAME_WIDTH)), int(out.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (480, 360)
    out.release()
    seg = segkit.Segmenter(model, device="cpu")
    cap = cv2.VideoCapture(str(clip))
    for i in range(12):
        ok, frame = cap.read()
        assert ok
        label = np.array(Image.open(tmp_path / "v" / f"clip_{i:06d}_label.png"))
        assert np.array_equal(label, seg(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).label)
    cap.release()
