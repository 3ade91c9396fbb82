"""Geometry Compensation Module: fast path == loop reference, init, geometry, export."""

from __future__ import annotations

import torch

from bevsimdet.models.gcm import GCM, DeformableSelfAttention2d, deform_attn_reference


def _randomise(attn: DeformableSelfAttention2d, seed: int) -> None:
    """Non-trivial offsets and weights (the init has zero offset/attention weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_fast_path_equals_reference():
    torch.manual_seed(0)
    attn = DeformableSelfAttention2d(channels=8, height=4, width=5, num_heads=2, num_points=3)
    _randomise(attn, 1)
    # large offsets push samples outside the map, exercising the zero padding
    with torch.no_grad():
        attn.sampling_offsets.bias.mul_(6.0)
    x = torch.randn(2, 8, 4, 5)
    torch.testing.assert_close(attn(x), deform_attn_reference(attn, x), rtol=1e-5, atol=1e-5)


def test_reference_points_are_cell_centres():
    attn = DeformableSelfAttention2d(channels=4, height=2, width=4, num_heads=1, num_points=1)
    ref = attn.ref_points
    assert ref[0].tolist() == [0.125, 0.25]
    assert ref[-1].tolist() == [0.875, 0.75]


def test_zero_offset_sample_reads_its_own_cell():
    """With zero offsets a sample at the reference point returns exactly the cell's value."""
    attn = DeformableSelfAttention2d(channels=4, height=3, width=5, num_heads=2, num_points=2)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
        attn.value_proj.weight.copy_(torch.eye(4))
        attn.output_proj.weight.copy_(torch.eye(4))
    x = torch.randn(1, 4, 3, 5)
    torch.testing.assert_close(attn(x), x, rtol=1e-6, atol=1e-6)


def test_init_is_deformable_detr():
    attn = DeformableSelfAttention2d(channels=16, height=3, width=3, num_heads=4, num_points=2)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    bias = attn.sampling_offsets.bias.view(4, 2, 2)
    # head 0 points along +x, at radii 1 and 2 cells
    torch.testing.assert_close(bias[0], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    torch.testing.assert_close(bias[:, 1], 2 * bias[:, 0])


def test_gcm_residual_shape_and_gradients():
    gcm = GCM(channels=8, height=6, width=7, num_heads=2, num_points=4)
    x = torch.randn(2, 8, 6, 7, requires_grad=True)
    y = gcm(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and gcm.attn.value_proj.weight.grad is not None


def test_gcm_exports_to_onnx(tmp_path):
    import onnx
    import onnxruntime as ort

    gcm = GCM(channels=8, height=4, width=6, num_heads=2, num_points=2).eval()
    _randomise(gcm.attn, 3)
    x = torch.randn(1, 8, 4, 6)
    path = tmp_path / "gcm.onnx"
    torch.onnx.export(gcm, (x,), str(path), opset_version=17, input_names=["x"], output_names=["y"], dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"NonZero", "Inverse"}
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), gcm(x).detach(), rtol=1e-4, atol=1e-4)
