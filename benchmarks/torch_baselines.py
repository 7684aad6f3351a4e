"""The benchmark networks in PyTorch (torchvision is not installed here, so they are written out).

Same layers as `jaxnets.models` (`lenet5`, `resnet18` CIFAR stem, `vgg11_bn` CIFAR) and the same parameter
counts, with torchvision's module names: the tests of `jaxnets.models.port` port these same networks (the one
definition of each torch reference). Training step: `torch.optim.SGD(momentum=0.9)` and `F.cross_entropy`, the
usual `zero_grad(set_to_none=True); loss.backward(); opt.step()`. Run eagerly in NCHW (torch's default) or
channels-last (`memory_format=torch.channels_last`, oneDNN's preferred layout on CPU), or through
`torch.compile` (Inductor), on the CPU or a CUDA device (`device=`), in float32 or under
`torch.autocast(device_type, dtype)` (`amp_dtype=`, e.g. torch.bfloat16: the forward pass and the loss autocast,
the backward pass follows the forward's dtypes, parameters and SGD stay float32, as PyTorch's AMP recipe). torch
is imported by the benchmarks only, never by the jaxnets package.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                        nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock, with its module names (so `jaxnets.models.port.from_torch`
    reads its state_dict)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision.models.resnet18 (v1.5) with its module names: the 7x7 stride-2 stem and max pool for
    `variant="imagenet"`; for "cifar" (the benchmarks') a 3x3 stride-1 stem and no pool."""

    def __init__(self, variant: str = "cifar", num_classes: int = 10):
        super().__init__()
        imagenet = variant == "imagenet"
        self.conv1 = nn.Conv2d(3, 64, 7 if imagenet else 3, 2 if imagenet else 1, 3 if imagenet else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if imagenet else nn.Identity()
        inplanes, stages = 64, []
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class VGG11BN(nn.Module):
    """torchvision's VGG-11-BN features (conv with bias, BN, ReLU; max pools), then one Linear(512, classes)
    named "classifier": `jaxnets.models.vgg.VGG(depth=11, batch_norm=True, variant="cifar")`."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


MODELS = {"lenet5": LeNet5, "resnet18": ResNet18, "vgg11_bn": VGG11BN}


def create(name: str, *, channels_last: bool = False, device: str = "cpu") -> nn.Module:
    """The network `name` (seeded with 0) on `device`, its parameters channels-last if `channels_last`."""
    torch.manual_seed(0)
    model = MODELS[name]().to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def to_input(images_nhwc, *, channels_last: bool, device: str = "cpu") -> torch.Tensor:
    """NHWC numpy images -> an NCHW tensor on `device`, stored channels-last (`channels_last=True`) or contiguous."""
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).to(device)
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _autocast(model: nn.Module, amp_dtype):
    """A context factory: `torch.autocast` on the model's device type in `amp_dtype`, or nothing for None."""
    if amp_dtype is None:
        return contextlib.nullcontext
    device_type = next(model.parameters()).device.type
    return lambda: torch.autocast(device_type, dtype=amp_dtype)


def make_train_step(model: nn.Module, *, compile: bool = False, amp_dtype=None):
    """`step(images, labels) -> loss` (a tensor): one SGD-momentum update of `model` in training mode.

    `amp_dtype` (e.g. torch.bfloat16): forward and loss under `torch.autocast(device_type, dtype=amp_dtype)`,
    backward and update outside it (bfloat16 needs no GradScaler)."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile else model
    autocast = _autocast(model, amp_dtype)

    def step(images, labels):
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(forward(images), labels)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def make_predict(model: nn.Module, *, compile: bool = False, amp_dtype=None):
    """`predict(images) -> logits` in eval mode under `torch.inference_mode` (and autocast to `amp_dtype`)."""
    model.eval()
    forward = torch.compile(model) if compile else model
    autocast = _autocast(model, amp_dtype)

    def predict(images):
        with torch.inference_mode(), autocast():
            return forward(images)

    return predict
