"""SegFormer family: MiT encoder, All-MLP head, parameter counts, checkpoint conversion.

Parity reference: Hugging Face ``transformers.SegformerForSemanticSegmentation`` with random
weights (LayerNorm eps set to the official values), loaded through our converter from its
on-disk (Hub) key names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import segkit
from segkit.checkpoints import CheckpointError
from segkit.models.backbones.mit import MixVisionTransformer
from segkit.models.contract import Features
from segkit.models.segformer import MIT_VARIANTS
from segkit.models.segformer import VARIANTS as SEGFORMER_VARIANTS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one intra-op thread is fastest and shares the CPU with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LISTINGS = Path(__file__).resolve().parent / "data" / "checkpoint-keys"

# the official ADE20K model's total minus the unused conv_seg (150·128 + 150 = 19,350), and encoder.
EXPECTED_PARAMS = {
    "b0": (3_772_044 - 19_350, 3_319_392),
    "b1": (13_735_148 - 19_350, 13_151_424),
    "b2": (27_481_324 - 19_350, 24_196_288),
    "b3": (47_357_164 - 19_350, 44_072_128),
    "b4": (64_127_724 - 19_350, 60_842_688),
    "b5": (84_728_044 - 19_350, 81_443_008),
}


def _listing(name: str) -> dict[str, tuple[int, ...]]:
    path = LISTINGS / name
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        out[key] = tuple(int(s) for s in re.findall(r"\d+", shape))
    return out


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-trivial values everywhere (biases, norm affines, BN running statistics).

    Weights get std ``1 / sqrt(fan_in)`` so that activations stay O(1) through the network and
    the logits depend strongly on every layer (with the usual 0.02 init they barely vary).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                base = 1.0 if name.endswith("weight") else 0.0  # norm weights around 1
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model


# ----------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("variant", sorted(EXPECTED_PARAMS))
def test_parameter_counts(variant):
    with torch.device("meta"):  # shapes only: fast, no memory, no initialisation cost
        model = segkit.build_model(f"segformer-{variant}", num_classes=150)
    total, encoder = EXPECTED_PARAMS[variant]
    assert segkit.count_parameters(model.backbone) == encoder
    assert segkit.count_parameters(model) == total


def test_b0_hub_total_matches_hf_listing():
    listing = _listing("hf_segformer-b0.hub.txt")
    header = (LISTINGS / "hf_segformer-b0.hub.txt").read_text().splitlines()[1]
    hf_params = int(re.search(r"parameters: ([\d,]+)", header)[1].replace(",", ""))
    model = segkit.build_model("segformer-b0", num_classes=150)
    assert segkit.count_parameters(model) == hf_params
    # Hub files store key and value separately (weight + bias each): one extra pair of keys per block.
    assert len(listing) == len(model.state_dict()) + 2 * sum(MIT_VARIANTS["b0"]["depths"])


def test_official_key_names_and_layernorm_eps():
    model = segkit.build_model("segformer-b0", num_classes=19)
    keys = set(model.state_dict())
    for s in range(1, 5):
        assert {
            f"backbone.patch_embed{s}.proj.weight",
            f"backbone.patch_embed{s}.norm.bias",
            f"backbone.norm{s}.weight",
            f"decode_head.linear_c{s}.proj.weight",
        } <= keys
        block = f"backbone.block{s}.1."
        expected = {
            block + n
            for n in (
                "norm1.weight",
                "attn.q.weight",
                "attn.kv.bias",
                "attn.proj.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.dwconv.dwconv.weight",
                "mlp.fc2.bias",
            )
        }
        assert expected <= keys
        assert (block + "attn.sr.weight" in keys) == (s < 4)
        assert (block + "attn.norm.weight" in keys) == (s < 4)
    assert {
        "decode_head.linear_fuse.conv.weight",
        "decode_head.linear_fuse.bn.running_var",
        "decode_head.linear_pred.weight",
        "decode_head.linear_pred.bias",
    } <= keys
    assert "decode_head.linear_fuse.conv.bias" not in keys
    assert not any("conv_seg" in k for k in keys)
    # LayerNorm eps of the official code (mix_transformer.py; docs/implementation_notes.md)
    eps = {n: m.eps for n, m in model.backbone.named_modules() if isinstance(m, nn.LayerNorm)}
    for name, e in eps.items():
        official = 1e-5 if (name.startswith("patch_embed") or name.endswith("attn.norm")) else 1e-6
        assert e == official, name
    assert model.backbone.block1[0].attn.kv.weight.shape == (64, 32)


@pytest.mark.parametrize("size", [(64, 64), (72, 88)])
def test_b0_output_shapes(size):
    torch.manual_seed(0)
    model = segkit.build_model("segformer-b0", num_classes=7).eval()
    x = torch.randn(2, 3, *size)
    h, w = size
    with torch.no_grad():
        feats = model.backbone(x).stages
        expected = []
        for stride_div in (4, 2, 2, 2):  # conv padding k // 2: ceil division at every stage
            h, w = -(-h // stride_div), -(-w // stride_div)
            expected.append((h, w))
        assert [tuple(f.shape) for f in feats] == [(2, c, *hw) for c, hw in zip((32, 64, 160, 256), expected)]
        logits = model.encode_decode(x)
        assert logits.shape == (2, 7, *expected[0])
        full = model(x)
    assert full.shape == (2, 7, *size)
    assert torch.isfinite(full).all()


def test_too_small_input_is_a_clear_error():
    model = segkit.build_model("segformer-b0", num_classes=3).eval()
    with pytest.raises(ValueError, match="sequence-reduction"):
        model(torch.randn(1, 3, 24, 64))


def test_stochastic_depth_and_dropout_only_in_training():
    torch.manual_seed(0)
    enc = MixVisionTransformer(**MIT_VARIANTS["b0"], drop_path_rate=0.5, attn_drop_rate=0.3, drop_rate=0.1)
    x = torch.randn(2, 3, 64, 64)
    enc.eval()
    with torch.no_grad():
        a, b = enc(x).stages[-1], enc(x).stages[-1]
    assert torch.equal(a, b)
    enc.train()
    with torch.no_grad():
        c, d = enc(x).stages[-1], enc(x).stages[-1]
    assert not torch.allclose(c, d)
    rates = [
        blk.drop_path.drop_prob
        for s in range(1, 5)
        for blk in getattr(enc, f"block{s}")
        if not isinstance(blk.drop_path, nn.Identity)
    ]
    assert rates == pytest.approx(torch.linspace(0, 0.5, 8)[1:].tolist())


def test_head_concat_order_is_c4_first():
    """Zeroing the fuse weights of one E-block must kill exactly the stage fed into it."""
    head = segkit.build_model("segformer-b0", num_classes=4).decode_head.eval()
    maps = [torch.randn(1, c, 16 // 2**i, 16 // 2**i) for i, c in enumerate((32, 64, 160, 256))]
    e = head.embed_dim
    with torch.no_grad():
        head.linear_fuse.conv.weight[:, :e] = 0  # first block = c4 in the official order
        base = head(Features(stages=maps))
        maps[3] = maps[3] + 5.0
        assert torch.allclose(head(Features(stages=maps)), base)
        maps[0] = maps[0] + 5.0
        assert not torch.allclose(head(Features(stages=maps)), base)


# ----------------------------------------------------------------------------- HF parity
def _hf_reference(variant: str, num_labels: int, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = MIT_VARIANTS[variant]
    config = transformers.SegformerConfig(
        num_labels=num_labels,
        hidden_sizes=list(cfg["embed_dims"]),
        depths=list(cfg["depths"]),
        num_attention_heads=list(cfg["num_heads"]),
        sr_ratios=list(cfg["sr_ratios"]),
        mlp_ratios=list(cfg["mlp_ratios"]),
        decoder_hidden_size=SEGFORMER_VARIANTS[variant]["decoder_dim"],
    )
    torch.manual_seed(seed)
    hf = transformers.SegformerForSemanticSegmentation(config)
    _randomize(hf, seed)
    # Official eps (mix_transformer.py): patch-embedding and reduction LNs 1e-5, the rest 1e-6.
    # transformers 4 names the reduction LN "attention.self.layer_norm", transformers 5
    # "attention.sequence_reduction.layer_norm".
    for name, module in hf.named_modules():
        if isinstance(module, nn.LayerNorm):
            official_default = "patch_embeddings" in name or "sequence_reduction" in name or "attention.self" in name
            module.eps = 1e-5 if official_default else 1e-6
    return hf.eval()


def _save_hub_format(hf, directory: Path) -> tuple[Path, Path, dict]:
    """``save_pretrained`` folder (writes the Hub key names) and a ``pytorch_model.bin`` copy of it."""
    from safetensors.torch import load_file

    folder = directory / "hf_pretrained"
    hf.save_pretrained(folder)
    hub_state = load_file(str(folder / "model.safetensors"))
    assert any(k.startswith("segformer.encoder.block.") for k in hub_state), "not the Hub names"
    bin_path = directory / "pytorch_model.bin"
    torch.save(hub_state, bin_path)
    return folder, bin_path, hub_state


def _assert_parity(model, hf, size):
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        ours = model.eval().encode_decode(x)
    assert ours.shape == ref.shape
    err = (ours - ref).abs().max().item()
    assert err <= 1e-4, f"max |Δ| = {err:.3g}"
    return err


def test_hf_parity_b0(tmp_path):
    hf = _hf_reference("b0", num_labels=150)
    folder, bin_path, hub_state = _save_hub_format(hf, tmp_path)
    listing = LISTINGS / "hf_segformer-b0.hub.txt"
    if listing.is_file():  # the file we wrote uses exactly the on-disk Hub names and shapes
        assert {k: tuple(v.shape) for k, v in hub_state.items()} == _listing("hf_segformer-b0.hub.txt")

    model = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model, bin_path, verbose=False)
    assert report.format == "hf-segformer"
    assert not report.missing and not report.unexpected and not report.dropped
    _assert_parity(model, hf, (64, 64))
    _assert_parity(model, hf, (72, 88))  # not a multiple of 32

    model2 = segkit.build_model("segformer-b0", num_classes=150)
    segkit.load_checkpoint(model2, folder, verbose=False)  # save_pretrained folder
    _assert_parity(model2, hf, (64, 64))

    # transformers' in-memory names (renamed in transformers 5), e.g. torch.save(hf.state_dict())
    mem_path = tmp_path / "in_memory.pth"
    torch.save(hf.state_dict(), mem_path)
    model3 = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model3, mem_path, verbose=False)
    renamed = any(".stages." in k for k in hf.state_dict())
    assert report.format == ("hf-segformer-v5" if renamed else "hf-segformer")
    _assert_parity(model3, hf, (64, 64))


def test_hf_imagenet_encoder(tmp_path):
    """``SegformerForImageClassification`` files (Hub ``nvidia/mit-b*``): encoder loaded, classifier dropped."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    cfg = MIT_VARIANTS["b0"]
    config = transformers.SegformerConfig(
        num_labels=1000, hidden_sizes=list(cfg["embed_dims"]), depths=list(cfg["depths"])
    )
    torch.manual_seed(0)
    hf = _randomize(transformers.SegformerForImageClassification(config), seed=2).eval()
    for name, module in hf.named_modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = (
                1e-5
                if ("patch_embeddings" in name or "sequence_reduction" in name or "attention.self" in name)
                else 1e-6
            )
    hf.save_pretrained(tmp_path / "mit")
    model = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model, tmp_path / "mit", verbose=False)
    assert sorted(report.dropped) == ["classifier.bias", "classifier.weight"]
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = hf.segformer(pixel_values=x, output_hidden_states=True).hidden_states
        ours = model.eval().backbone(x).stages
    assert len(ref) == 4
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4


def test_hf_parity_b2(tmp_path):
    hf = _hf_reference("b2", num_labels=19, seed=3)
    _, bin_path, _ = _save_hub_format(hf, tmp_path)
    model = segkit.build_model("segformer-b2", num_classes=19)
    segkit.load_checkpoint(model, bin_path, verbose=False)
    _assert_parity(model, hf, (64, 64))
    # the same B2 file into a B1 model (same widths, fewer blocks) is refused with a clear message
    with pytest.raises(CheckpointError, match=r"3 blocks in stage 1 \(B2-like\), model segformer-b1 has 2"):
        segkit.load_checkpoint(segkit.build_model("segformer-b1", num_classes=19), bin_path, verbose=False)


# ----------------------------------------------------------------------------- converters
def _tensors_equal(model_a, model_b, prefix=""):
    sa, sb = model_a.state_dict(), model_b.state_dict()
    keys = [k for k in sa if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    return all(torch.equal(sa[k], sb[k]) for k in keys)


@pytest.fixture()
def b0_source():
    torch.manual_seed(5)
    return _randomize(segkit.build_model("segformer-b0", num_classes=150), seed=5)


def test_nvlabs_full_checkpoint(tmp_path, b0_source):
    state = dict(b0_source.state_dict())  # segkit names are the NVlabs names
    state["decode_head.conv_seg.weight"] = torch.randn(150, 128, 1, 1)
    state["decode_head.conv_seg.bias"] = torch.randn(150)
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    torch.save({"meta": {"iter": 160000}, "state_dict": state}, path)
    model = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model, path, verbose=False)
    assert report.format == "nvlabs-segformer"
    assert sorted(report.dropped) == ["decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    assert not report.missing and not report.unexpected
    assert _tensors_equal(model, b0_source)
    # segkit's own names pass through
    own = tmp_path / "own.pth"
    torch.save(b0_source.state_dict(), own)
    report = segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), own, verbose=False)
    assert report.format == "segkit" and not report.dropped


def test_mit_imagenet_encoder(tmp_path, b0_source):
    state = {k[len("backbone.") :]: v for k, v in b0_source.state_dict().items() if k.startswith("backbone.")}
    state["head.weight"] = torch.randn(1000, 256)
    state["head.bias"] = torch.randn(1000)
    path = tmp_path / "mit_b0.pth"
    torch.save(state, path)
    model = segkit.build_model("segformer-b0", num_classes=150)
    head_before = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    report = segkit.load_checkpoint(model, path, verbose=False)  # strict: head may be missing
    assert report.format == "nvlabs-mit-imagenet"
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    assert report.missing and all(k.startswith("decode_head.") for k in report.missing)
    assert any("encoder-only" in n for n in report.notes)
    assert _tensors_equal(model, b0_source, "backbone.")
    assert all(torch.equal(v, head_before[k]) for k, v in model.decode_head.state_dict().items())


def _to_mmseg(state: dict) -> dict:
    """segkit/NVlabs encoder names → mmseg 1.x MiT names (mmseg's mit2mmseg.py name map), written independently."""
    out = {}
    for key, v in state.items():
        if not key.startswith("backbone."):
            continue
        k = key[len("backbone.") :]
        if m := re.fullmatch(r"patch_embed(\d)\.proj\.(\w+)", k):
            out[f"backbone.layers.{int(m[1]) - 1}.0.projection.{m[2]}"] = v
        elif m := re.fullmatch(r"patch_embed(\d)\.norm\.(\w+)", k):
            out[f"backbone.layers.{int(m[1]) - 1}.0.norm.{m[2]}"] = v
        elif m := re.fullmatch(r"norm(\d)\.(\w+)", k):
            out[f"backbone.layers.{int(m[1]) - 1}.2.{m[2]}"] = v
        else:
            m = re.fullmatch(r"block(\d)\.(\d+)\.(.+)", k)
            pre = f"backbone.layers.{int(m[1]) - 1}.1.{m[2]}."
            rest = m[3]
            if rest.startswith("attn.q."):
                kind = rest.split(".")[-1]
                kv = state[key.replace("attn.q.", "attn.kv.")]
                out[pre + f"attn.attn.in_proj_{kind}"] = torch.cat([v, kv], 0)
            elif rest.startswith("attn.kv."):
                continue
            elif rest.startswith("attn.proj."):
                out[pre + "attn.attn.out_proj." + rest.split(".")[-1]] = v
            elif rest.startswith("mlp.fc1."):
                out[pre + "ffn.layers.0." + rest.split(".")[-1]] = v[..., None, None] if v.ndim == 2 else v
            elif rest.startswith("mlp.dwconv.dwconv."):
                out[pre + "ffn.layers.1." + rest.split(".")[-1]] = v
            elif rest.startswith("mlp.fc2."):
                out[pre + "ffn.layers.4." + rest.split(".")[-1]] = v[..., None, None] if v.ndim == 2 else v
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[pre + rest] = v
    return out


def test_mmseg_encoder(tmp_path, b0_source):
    state = _to_mmseg(b0_source.state_dict())
    head = {
        "decode_head.convs.0.conv.weight": torch.randn(256, 32, 1, 1),
        "decode_head.fusion_conv.conv.weight": torch.randn(256, 1024, 1, 1),
        "decode_head.fusion_conv.bn.running_var": torch.rand(256),
        "decode_head.conv_seg.weight": torch.randn(150, 256, 1, 1),
    }
    path = tmp_path / "segformer_mit-b0_mmseg.pth"
    torch.save({"meta": {}, "state_dict": {**state, **head}}, path)
    model = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model, path, verbose=False)
    assert report.format == "mmseg-segformer"
    assert sorted(report.dropped) == sorted(head)
    assert any("different architecture" in n for n in report.notes)
    assert all(k.startswith("decode_head.") for k in report.missing)
    assert _tensors_equal(model, b0_source, "backbone.")


def test_mmseg_names_match_listing(b0_source):
    listing = _listing("mmseg_segformer-b0.txt")
    ours = {k: tuple(v.shape) for k, v in _to_mmseg(b0_source.state_dict()).items()}
    assert ours == {k: s for k, s in listing.items() if k.startswith("backbone.")}


def test_wrong_variant_is_refused(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(segkit.build_model("segformer-b1", num_classes=150).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"width 64 in stage 1 \(B1-like\), model segformer-b0 has 32"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), path, verbose=False)


def test_missing_encoder_keys(tmp_path, b0_source):
    state = dict(b0_source.state_dict())
    removed = ["backbone.block1.0.attn.q.weight", "backbone.norm4.bias"]
    for k in removed:
        del state[k]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="encoder key"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), path, verbose=False)
    model = segkit.build_model("segformer-b0", num_classes=150)
    report = segkit.load_checkpoint(model, path, strict=False, verbose=False)
    assert sorted(report.missing) == sorted(removed)
    sd, src = model.state_dict(), b0_source.state_dict()
    assert all(torch.equal(sd[k], src[k]) for k in state if not k.endswith("num_batches_tracked"))
    assert not torch.equal(sd[removed[0]], src[removed[0]])


def test_num_classes_mismatch(tmp_path, b0_source):
    path = tmp_path / "ade.pth"
    torch.save(b0_source.state_dict(), path)
    with pytest.raises(CheckpointError, match="linear_pred"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=19), path, verbose=False)
    model = segkit.build_model("segformer-b0", num_classes=19)
    report = segkit.load_checkpoint(model, path, strict=False, verbose=False)
    assert {k for k, _, _ in report.mismatched} == {"decode_head.linear_pred.weight", "decode_head.linear_pred.bias"}
    assert any("150 classes" in n for n in report.notes)
    assert _tensors_equal(model, b0_source, "backbone.")


class _NotAStateDict:
    def __init__(self):
        self.weight = torch.zeros(3)


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _NotAStateDict()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), path, verbose=False)


def test_other_architectures_are_refused(tmp_path):
    path = tmp_path / "segnext.pth"
    torch.save(
        {
            "backbone.block1.0.layer_scale_1": torch.zeros(32),
            "backbone.patch_embed1.proj.0.weight": torch.zeros(16, 3, 3, 3),
        },
        path,
    )
    with pytest.raises(CheckpointError, match="SegNeXt"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), path, verbose=False)
    path = tmp_path / "half_kv.pth"
    torch.save({"segformer.encoder.block.0.0.attention.self.key.weight": torch.zeros(32, 32)}, path)
    with pytest.raises(CheckpointError, match="no value counterpart"):
        segkit.load_checkpoint(segkit.build_model("segformer-b0", num_classes=150), path, verbose=False)
