"""Hub loading that can be trusted: revisions, a converted cache keyed by commit, licence notices by Hub id,
and a fast, clear error when the Hub cannot be reached."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

import segkit
from segkit import hub

hf = pytest.importorskip("huggingface_hub")
transformers = pytest.importorskip("transformers")

REPO_ID = "nvidia/segformer-b0-finetuned-revtest"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    """REPO_ID in the Hugging Face cache layout with two commits: a transformers SegFormer-B0 with 3 classes,
    named ``ca0``… in commit A and ``cb0``… in commit B (same weights: the names tell the commits apart)."""
    import shutil

    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    root = tmp_path_factory.mktemp("hfcache")
    repo = root / ("models--" + REPO_ID.replace("/", "--"))
    torch.manual_seed(0)
    cfg = SegformerConfig(num_labels=3, id2label={i: f"ca{i}" for i in range(3)})
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    SegformerForSemanticSegmentation(cfg).save_pretrained(repo / "snapshots" / COMMIT_A)
    shutil.copytree(repo / "snapshots" / COMMIT_A, repo / "snapshots" / COMMIT_B)
    config = json.loads((repo / "snapshots" / COMMIT_B / "config.json").read_text())
    config["id2label"] = {str(i): f"cb{i}" for i in range(3)}
    config["label2id"] = {f"cb{i}": i for i in range(3)}
    (repo / "snapshots" / COMMIT_B / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    return root, repo


@pytest.fixture
def offline_hub(hf_cache, tmp_path, monkeypatch):
    from huggingface_hub import constants

    root, repo = hf_cache
    (repo / "refs" / "main").write_text(COMMIT_A)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "segkit"))
    monkeypatch.setattr(hub, "_NOTICES", set())
    return repo, tmp_path / "segkit" / "hub" / REPO_ID.replace("/", "--")


def test_revision_selects_the_commit_and_a_moved_main_is_converted_again(offline_hub, capsys):
    repo, converted = offline_hub
    m = segkit.from_pretrained(REPO_ID)
    assert m.class_names[0] == "ca0" and m.source["commit"] == COMMIT_A and m.source["revision"] == "main"
    assert sorted(p.name for p in converted.iterdir()) == [COMMIT_A]
    assert segkit.from_pretrained(REPO_ID, revision=COMMIT_B).class_names[0] == "cb0"  # pinned: the other commit
    assert sorted(p.name for p in converted.iterdir()) == [COMMIT_A, COMMIT_B]

    (repo / "refs" / "main").write_text(COMMIT_B)  # upstream moved main
    (converted / COMMIT_B).rename(converted.parent / "elsewhere")  # so that the next load must convert
    m = segkit.load_model(REPO_ID)
    assert m.class_names[0] == "cb0" and (converted / COMMIT_B / "model.safetensors").is_file()
    stored = json.loads((converted / COMMIT_B / "config.json").read_text())
    assert json.dumps(stored).count(COMMIT_B) >= 1
    pinned = segkit.Segmenter(REPO_ID, device="cpu", revision=COMMIT_A)  # never served from main's cache
    assert pinned.classes[0] == "ca0"

    (repo / "refs" / "v1").write_text(COMMIT_A)  # a tag or branch name resolves through refs/ as well
    assert segkit.from_pretrained(REPO_ID, revision="v1").class_names[0] == "ca0"
    with pytest.raises(hub.DownloadError, match="revision nope"):
        segkit.from_pretrained(REPO_ID, revision="nope")


def test_licence_is_printed_for_an_nvidia_hub_id(offline_hub, capsys):
    segkit.from_pretrained(REPO_ID)
    err = capsys.readouterr().err
    assert f"hf://{REPO_ID}: licence of these weights:" in err and "non-commercial" in err
    segkit.from_pretrained(REPO_ID)  # once per process and model, also when it comes from the converted cache
    assert "licence" not in capsys.readouterr().err
    hub._NOTICES.clear()
    segkit.from_pretrained(REPO_ID)  # a new process (notices reset): printed again from the cache
    assert "non-commercial" in capsys.readouterr().err


def test_card_licence_of_other_repos(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: other\nlicense_name: acme-nc\nlicense_link: LICENSE\n---\n# x")
    assert hub.hub_licence("acme/seg", {}, tmp_path) == "acme-nc (LICENSE)"
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    assert hub.hub_licence("acme/seg", {}, tmp_path) == "apache-2.0"
    assert hub.hub_licence("acme/seg", {}, None) is None
    assert "NVIDIA" in hub.hub_licence("nvidia/anything", {}, None)


def test_revision_is_refused_for_local_folders_and_registry_names(tmp_path):
    folder = segkit.build_model("segformer-b0", num_classes=2).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="revision 'main' is for Hub repo ids"):
        segkit.from_pretrained(folder, revision="main")
    with pytest.raises(ValueError, match="registry name"):
        segkit.from_pretrained("segformer-b0_ade20k-512", revision="main")


def _closed_port() -> int:
    with socket.socket() as s:  # a port on 127.0.0.1 that nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
    from huggingface_hub import constants

    port = _closed_port()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("SEGKIT_CACHE", str(tmp_path / "segkit"))
    for v in ("HF_HUB_OFFLINE", "SEGKIT_OFFLINE", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy"):
        monkeypatch.delenv(v, raising=False)
    t0 = time.monotonic()
    with pytest.raises(hub.HubUnreachableError) as e:
        segkit.from_pretrained("acme/street-seg", revision="v2")
    assert time.monotonic() - t0 < 10  # huggingface_hub's own retries take 25-55 s
    msg = str(e.value)
    assert "hf://acme/street-seg (revision v2)" in msg and "could not be reached" in msg
    assert f"127.0.0.1:{port}" in msg and "not found" not in msg.lower()
    assert str(tmp_path / "hf" / "models--acme--street-seg") + "/refs/v2" in msg
    assert "`hf download acme/street-seg --revision v2`" in msg


def test_unreachable_hub_in_the_cli_is_one_line_exit_1(tmp_path):
    env = {
        **os.environ,
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "SEGKIT_CACHE": str(tmp_path / "segkit"),
        "OMP_NUM_THREADS": "1",
    }
    for v in ("HF_HUB_OFFLINE", "SEGKIT_OFFLINE", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy"):
        env.pop(v, None)
    cmd = [sys.executable, "-m", "segkit", "eval", "acme/street-seg", "--data", str(tmp_path), "--device", "cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    assert "hf://acme/street-seg (revision main)" in err and "could not be reached" in err and "hf download" in err
