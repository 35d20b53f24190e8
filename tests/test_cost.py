"""Cost model: the textbook examples exactly, and analytic == measured for every block."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from edgeconv import blocks as B
from edgeconv.cost import conv_cost, count_macs, count_params


def both(block, in_chs, hw):
    """(analytic params, measured params, analytic MACs, measured MACs, out shape ok)."""
    c = block.cost(hw)
    out = block.eval()(torch.zeros(1, in_chs, *hw))
    return c, count_params(block), count_macs(block, (in_chs, *hw)), tuple(out.shape[1:])


@pytest.mark.parametrize("make, params", [
    (lambda: B.ConvNormAct(256, 512, 3, norm=False), 1_179_648),
    (lambda: B.Depthwise(256, 3, norm=False), 2_304),
    (lambda: B.Pointwise(256, 512, norm=False), 131_072),
    (lambda: B.DepthwiseSeparable(256, 512, 3, norm=False), 133_376),
    (lambda: B.ConvNormAct(3, 4, 3, norm=False), 108),
    (lambda: B.Depthwise(3, 3, norm=False), 27),
    (lambda: B.Pointwise(3, 4, norm=False), 12),
])
def test_textbook_params(make, params):
    block = make()
    assert block.cost((7, 7)).params == params
    assert count_params(block) == params


@pytest.mark.parametrize("groups", [1, 2, 4, 8, 16])
def test_grouped_conv_costs_one_over_g(groups):
    std = B.ConvNormAct(64, 128, 3, norm=False).cost((14, 14))
    g = B.GroupedConv(64, 128, 3, groups=groups, norm=False).cost((14, 14))
    assert g.params * groups == std.params
    assert g.macs * groups == std.macs


def test_separable_ratio_matches_paper_formula():
    # MobileNets eq. 5: separable / standard = 1/N + 1/Dk^2
    std = B.ConvNormAct(256, 512, 3, norm=False).cost((14, 14))
    sep = B.DepthwiseSeparable(256, 512, 3, norm=False).cost((14, 14))
    assert sep.macs / std.macs == pytest.approx(1 / 512 + 1 / 9)


BLOCKS = {
    "cn": lambda i, o, k, s, g, d, p, a: B.ConvNormAct(i, o, k, s, groups=g, dilation=d, padding=p, act=a),
    "dw": lambda i, o, k, s, g, d, p, a: B.Depthwise(i, k, s, dilation=d, padding=p, act=a),
    "ds": lambda i, o, k, s, g, d, p, a: B.DepthwiseSeparable(i, o, k, s, dilation=d, padding=p, act=a),
    "gc": lambda i, o, k, s, g, d, p, a: B.GroupedConv(i, o, k, s, groups=g, dilation=d, padding=p, act=a),
    "ir": lambda i, o, k, s, g, d, p, a: B.InvertedResidual(i, o, k, s, exp_ratio=g, dilation=d, padding=p, act=a),
    "ir_dense": lambda i, o, k, s, g, d, p, a: B.InvertedResidual(i, o, k, s, exp_ratio=g, padding=p, act=a,
                                                                  depthwise=False),
}


@settings(max_examples=50, deadline=None)
@given(kind=st.sampled_from(sorted(BLOCKS)), g=st.sampled_from([1, 2, 4]), base=st.integers(1, 6),
       mult=st.integers(1, 4), k=st.sampled_from([1, 3, 5, 7]), s=st.integers(1, 3), d=st.integers(1, 2),
       hw=st.tuples(st.integers(9, 20), st.integers(9, 20)),
       padding=st.sampled_from(["same", "tf_same", 0, 1]), act=st.sampled_from(["relu", "relu6", "hswish", "none"]))
def test_valid_configs_analytic_equals_measured(kind, g, base, mult, k, s, d, hw, padding, act):
    in_chs, out_chs = base * g, base * g * mult
    block = BLOCKS[kind](in_chs, out_chs, k, s, g, d, padding, act)
    try:
        block.cost(hw)
    except ValueError as e:  # input too small for the kernel: the module must refuse it too
        assert "too small" in str(e)
        with pytest.raises(RuntimeError):
            block.eval()(torch.zeros(1, in_chs, *hw))
        return
    c, params, macs, out_shape = both(block, in_chs, hw)
    assert c.params == params
    assert c.macs == macs
    assert c.out_shape == out_shape
    assert c.act_bytes > 0


def test_tf_same_pads_asymmetrically():
    # TF SAME at stride 2 on an even size pads (0, 1): output keeps ceil(size/stride)
    block = B.ConvNormAct(1, 1, 3, 2, padding="tf_same", norm=False, act="none")
    torch.nn.init.ones_(block.conv.weight)
    y = block(torch.ones(1, 1, 4, 4))
    assert y.shape[-2:] == (2, 2)
    # top-left window sees a full 3x3 of ones; bottom-right window has one padded row and column
    assert y[0, 0, 0, 0].item() == 9
    assert y[0, 0, 1, 1].item() == 4


def test_channel_shuffle_interleaves():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert B.ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_residual_only_when_shapes_match():
    assert B.InvertedResidual(16, 16, 3, 1).has_skip
    assert not B.InvertedResidual(16, 16, 3, 2).has_skip
    assert not B.InvertedResidual(16, 24, 3, 1).has_skip


@pytest.mark.parametrize("make, field", [
    (lambda: B.ConvNormAct(16, 32, 3, groups=3), "groups=3"),
    (lambda: B.GroupedConv(18, 32, 3, groups=4), "groups=4"),
    (lambda: B.ConvNormAct(0, 32, 3), "in_chs=0"),
    (lambda: B.ConvNormAct(16, -1, 3), "out_chs=-1"),
    (lambda: B.ConvNormAct(16, 32, 3, 0), "stride=0"),
    (lambda: B.ConvNormAct(16, 32, 4, padding="same"), "kernel_size=4"),
    (lambda: B.ConvNormAct(16, 32, 3, padding="valid"), "padding='valid'"),
    (lambda: B.ConvNormAct(16, 32, 3, act="gelu"), "act='gelu'"),
    (lambda: B.InvertedResidual(16, 16, 3, exp_ratio=0), "exp_ratio=0"),
])
def test_bad_block_config_names_field(make, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(")):
        make()


@settings(max_examples=40, deadline=None)
@given(in_chs=st.integers(1, 64), out_chs=st.integers(1, 64), groups=st.integers(2, 9))
def test_groups_not_dividing_is_rejected(in_chs, out_chs, groups):
    if in_chs % groups == 0 and out_chs % groups == 0:
        B.ConvNormAct(in_chs, out_chs, 3, groups=groups)
    else:
        with pytest.raises(ValueError, match=f"groups={groups} must divide"):
            B.ConvNormAct(in_chs, out_chs, 3, groups=groups)


def test_conv_cost_formula():
    c = conv_cost(32, 64, 3, (112, 112), stride=2)
    assert c.out_shape == (64, 56, 56)
    assert c.macs == 3 * 3 * 32 * 64 * 56 * 56
