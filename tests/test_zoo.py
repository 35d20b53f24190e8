"""Zoo: every model and its twin builds, runs, and its analytic cost equals the measured one."""
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from edgeconv.cost import count_macs, count_params
from edgeconv.spec import KINDS, BlockSpec, ModelSpec, parse_block
from edgeconv.zoo import create_model, list_models, load_spec

SMALL = {n: min(load_spec(n).input_size, 64) for n in list_models()}  # every zoo model, at most 64x64


def test_zoo_lists_every_spec_file():
    assert {"mobilenet_v1", "mobilenet_v2", "efficientnet_lite0", "tiny"} <= set(list_models())
    from edgeconv.zoo import MODELS_DIR
    assert MODELS_DIR.parent.name == "edgeconv"  # package data, found wherever edgeconv is installed


@pytest.mark.parametrize("twin", [False, True], ids=["separable", "twin"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_builds_runs_and_counts(name, twin):
    size = SMALL[name]
    model = create_model(name, twin=twin, input_size=size)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.spec.num_classes)
    cost = model.cost()
    assert cost.params == count_params(model)
    assert cost.macs == count_macs(model, model.input_shape)
    assert cost.out_shape == (model.spec.num_classes, 1, 1)
    assert sum(r.cost.params for r in cost.rows) == cost.params


@pytest.mark.parametrize("name, size, macs, weights, tol", [
    # MobileNets (Howard et al. 2017) Table 4: 569M mult-adds, 4.2M params; its full-conv twin
    # 4866M and 29.3M. Papers count conv/fc weights (batch norm folds away).
    ("mobilenet_v1", 224, 569e6, 4.2e6, 0.02),
    # MobileNetV2 (Sandler et al. 2018) Table 4: 300M MACs, "3.4M" params, which the
    # reference TF-slim release lists unrounded as 3.47M (mobilenet_v2_1.0_224)
    ("mobilenet_v2", 224, 300e6, 3.47e6, 0.02),
])
def test_paper_counts(name, size, macs, weights, tol):
    model = create_model(name)
    assert model.cost().macs == pytest.approx(macs, rel=tol)
    assert count_params(model, include_norm=False) == pytest.approx(weights, rel=tol)


def test_mobilenet_v1_full_conv_twin_matches_paper():
    twin = create_model("mobilenet_v1", twin=True)
    assert twin.cost().macs == pytest.approx(4866e6, rel=0.02)
    assert count_params(twin, include_norm=False) == pytest.approx(29.3e6, rel=0.02)


def test_efficientnet_lite0_params():
    assert create_model("efficientnet_lite0").cost().params == pytest.approx(4.65e6, rel=0.02)


def test_width_and_resolution_multipliers():
    # MobileNets Table 6/7: 0.5 MobileNet-224 149M MACs 1.3M params; 1.0 MobileNet-160 290M MACs
    half = create_model("mobilenet_v1", width=0.5)
    assert half.cost().macs == pytest.approx(149e6, rel=0.02)
    assert count_params(half, include_norm=False) == pytest.approx(1.3e6, rel=0.03)
    assert create_model("mobilenet_v1", input_size=160).cost().macs == pytest.approx(290e6, rel=0.02)


def test_twin_rule_keeps_topology():
    model, twin = create_model("mobilenet_v2"), create_model("mobilenet_v2", twin=True)
    assert list(model.arch) == list(twin.arch)
    for name in list(model.arch)[:-1]:  # all but the linear classifier
        a, b = parse_block(model.arch[name]), parse_block(twin.arch[name])
        assert (a.kernel_size, a.stride, a.out_chs) == (b.kernel_size, b.stride, b.out_chs)
    assert model.arch["stem"] == twin.arch["stem"] and model.arch["head.0"] == twin.arch["head.0"]
    dw = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert dw and not [m for m in twin.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_spec_arch_strings_round_trip(name):
    spec = load_spec(name)
    for arch in [spec.stem, *spec.head, *(a for st in spec.stages for a in st)]:
        assert str(parse_block(arch)) == arch
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    twin = spec.as_twin()
    assert ModelSpec.from_dict(twin.to_dict()) == twin


block_specs = st.builds(
    lambda kind, r, k, s, e, c, g, d, a, sh: BlockSpec(
        kind, out_chs=c * (g if kind == "gc" else 1), repeats=r, kernel_size=1 if kind == "pw" else k, stride=s,
        exp_ratio=e if kind == "ir" else None, groups=g if kind == "gc" else 1, dilation=d, act=a,
        shuffle=sh and kind == "gc"),
    kind=st.sampled_from(sorted(KINDS)), r=st.integers(1, 5), k=st.sampled_from([1, 3, 5, 7]),
    s=st.integers(1, 2), e=st.sampled_from([1.0, 2.5, 4.0, 6.0]), c=st.integers(1, 512),
    g=st.integers(2, 8), d=st.integers(1, 2), a=st.sampled_from([None, "relu", "hswish", "none"]),
    sh=st.booleans())


@settings(max_examples=200, deadline=None)
@given(block_specs)
def test_any_block_spec_round_trips(spec):
    assert parse_block(str(spec)) == spec
    assert str(parse_block(str(spec))) == str(spec)


@pytest.mark.parametrize("arch, message", [
    ("xx_r1_k3_s1_c16", "unknown block kind 'xx'"),
    ("ir_r1_k3_s1_c16", "exp_ratio=None"),
    ("ds_r1_k3_s1", "missing output channels"),
    ("ds_r1_kx_s1_c16", "malformed token 'kx'"),
    ("ds_r1_k3_s1_c16_q7", "malformed token 'q7'"),
    ("ds_r1_k3_s0_c16", "stride=0"),
    ("ds_r1_k3_s1_c0", "out_chs=0"),
    ("gc_r1_k3_s1_c30_g4", "groups=4 must divide out_chs=30"),
    ("ds_r1_k3_s1_c16_k5", "repeats kernel_size"),
    ("ds_r1_k3_s1_c16_agelu", "act='gelu'"),
    ("", "non-empty"),
])
def test_bad_arch_strings_name_the_problem(arch, message):
    with pytest.raises(ValueError, match=message):
        parse_block(arch)


def test_bad_model_spec_names_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nstem = "cn_r1_k3_s2_c16"\nstages = [["ds_r1_k3_s1_c16"]]\nwidht = 0.5\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\]"):
        load_spec(bad)
    bad.write_text('name = "x"\nstem = "cn_r1_k3_s2_c16"\nstages = [["ds_r1_k3_s1_c16_g3"]]\n')
    with pytest.raises(ValueError, match="'ds' blocks do not take groups"):
        load_spec(bad)
    with pytest.raises(ValueError, match="unknown model 'nope'; known: "):
        create_model("nope")
    with pytest.raises(ValueError, match="gc_r1_k3_s1_c16_g4.*groups=4 must divide in_chs=3"):
        create_model(ModelSpec("x", "gc_r1_k3_s1_c16_g4", (("ds_r1_k3_s1_c16",),)))


@pytest.mark.parametrize("override, message", [
    ({"width": float("inf")}, "width=inf"),
    ({"width": float("nan")}, "width=nan"),
    ({"width": 1e6}, "width=1000000.0"),
    ({"width": 0.0}, "width=0.0"),
    ({"input_size": 100_000}, "input_size=100000"),
    ({"input_size": 0}, "input_size=0"),
    ({"num_classes": 10 ** 9}, "num_classes=1000000000"),
])
def test_absurd_sizes_are_refused_before_any_tensor_is_made(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model("tiny", **override)


def test_arch_string_sizes_are_bounded():
    with pytest.raises(ValueError, match="c1000000"):
        parse_block("cn_r1_k3_s1_c1000000")
    with pytest.raises(ValueError, match="exp_ratio=1000000.0"):
        parse_block("ir_r1_k3_s1_e1000000_c8")
