"""The exported-graph checker finds what a deployable graph must not contain."""

from __future__ import annotations

import io

import pytest
import torch

onnx = pytest.importorskip("onnx")

from bevsimdet.export.graph import forbidden_ops, op_types  # noqa: E402


class Masked(torch.nn.Module):
    def forward(self, x):
        return x[x > 0].sum() + torch.nonzero(x).shape[0]


class Clean(torch.nn.Module):
    def forward(self, x, index):
        # the splat the export uses: ScatterElements(reduction=add) sums duplicate indices
        out = torch.zeros(5, x.shape[1], dtype=x.dtype).scatter_add(0, index[:, None].expand(-1, x.shape[1]), x)
        return torch.relu(out)


def export(module, *args):
    buf = io.BytesIO()
    torch.onnx.export(module, args, buf, opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def test_boolean_indexing_and_nonzero_are_found():
    found = forbidden_ops(export(Masked(), torch.randn(4, 3)))
    assert "NonZero" in found


def test_inverse_and_foreign_domains_are_found():
    # torch.inverse does not even export with the TorchScript exporter; the op exists in
    # onnxruntime's contrib domain, so build such graphs by hand
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])
    for node, name in ((helper.make_node("Inverse", ["x"], ["y"], domain="com.microsoft"), "com.microsoft::Inverse"),
                       (helper.make_node("ATen", ["x"], ["y"], domain="org.pytorch.aten"), "org.pytorch.aten::ATen")):
        model = helper.make_model(helper.make_graph([node], "g", [x], [y]))
        assert name in forbidden_ops(model)


def test_scatter_add_graph_is_clean():
    model = export(Clean(), torch.randn(4, 3), torch.tensor([0, 2, 2, 4]))
    assert forbidden_ops(model) == {}
    assert op_types(model)["ScatterElements"] == 1
