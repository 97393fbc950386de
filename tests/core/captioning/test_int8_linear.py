"""The per-image int8 Linear: a row's result never depends on the other rows, on the
one-token path (one integer product for all rows) as on the per-image one."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")


def _int8_linear(in_features: int, out_features: int):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    from core.captioning.int8_linear import PerImageInt8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(in_features, out_features).eval()
    source = copy.copy(linear)
    source.qconfig = per_channel_dynamic_qconfig
    return linear, PerImageInt8Linear(DynamicQuantLinear.from_float(source))


@pytest.mark.parametrize("shape", [(6, 1, 48), (6, 48), (6, 5, 48)])
def test_each_row_alone_equals_it_in_the_batch(shape: tuple[int, ...]) -> None:
    linear, int8 = _int8_linear(48, 40)
    x = torch.randn(*shape) * torch.linspace(0.1, 10, shape[0]).reshape(-1, *[1] * (len(shape) - 1))
    with torch.inference_mode():
        together, reference = int8(x), linear(x)
        for i in range(shape[0]):
            assert torch.equal(int8(x[i : i + 1])[0], together[i])
    assert together.shape == reference.shape
    # int8 rounding only: within a few percent of the fp32 product.
    assert float((together - reference).abs().mean() / reference.abs().mean()) < 0.03
    if len(shape) == 3 and shape[1] == 1:
        assert int8._int8_t is not None  # the one-token steps took the single integer product
