"""``torch.compile`` (inductor) paths give the eager results to float32 tolerance: inference logits and
labels, and the training loss and gradients (``train.compile``). A small SegFormer-B0 (decoder width 32)
at 64² keeps the compile time of this file to a minute on two CPU cores."""

import pytest
import torch

import segkit


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return segkit.build_model("segformer-b0", num_classes=5, decoder_dim=32, drop_path_rate=0.0, dropout=0.0)


def test_compiled_inference_equals_eager(model):
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    compiled = torch.compile(model)
    with torch.inference_mode():
        eager = model(x)
        out = compiled(x)
    assert out.shape == eager.shape
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-4)
    assert (out.argmax(1) == eager.argmax(1)).float().mean() > 0.999


def test_compiled_training_path_gives_eager_loss_and_gradients(model):
    """What ``train.compile`` runs (:func:`segkit.engine.trainer.compile_for_training`)."""
    import copy

    from segkit.engine.trainer import compile_for_training

    model.eval()  # BatchNorm running statistics: both paths see the same normalisation
    compiled = copy.deepcopy(model)
    compile_for_training(compiled)
    assert list(compiled.state_dict()) == list(model.state_dict())  # checkpoint keys unchanged
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(3))
    y[:, :3] = 255

    def loss_and_grads(m):
        m.zero_grad(set_to_none=True)
        loss = m.loss(x, y)["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}

    eager_loss, eager_grads = loss_and_grads(model)
    comp_loss, comp_grads = loss_and_grads(compiled)
    assert any(float(g.abs().max()) > 0 for g in comp_grads.values())
    torch.testing.assert_close(comp_loss, eager_loss, rtol=1e-5, atol=1e-5)
    assert comp_grads.keys() == eager_grads.keys()
    for name, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], g, rtol=1e-3, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
