"""The d2l chapter's AlexNet in PyTorch: the peer that `train_throughput.py` measures against.

Same layers and shapes as `tf_alexnet.AlexNet(variant="d2l")` on 224x224x1 inputs
(54x54x96 after conv1, 5x5x256 after pool5, 46,764,746 parameters). PyTorch is a benchmark
dependency only (`pip install torch==2.13.0`), never a dependency of the package.
"""

from __future__ import annotations

from typing import Any


def feature_side(image_size: int) -> int:
    """Side of pool5's output for a square input (5 at 224 px)."""
    side = (image_size + 2 - 11) // 4 + 1  # conv1
    for _ in range(3):  # pool1, pool2, pool5 (3x3/2); the 5x5 and 3x3 convs keep the side
        side = (side - 3) // 2 + 1
    return side


def torch_alexnet(classes: int = 10, channels: int = 1, image_size: int = 224) -> Any:
    import torch.nn as nn

    features = 256 * feature_side(image_size) ** 2

    return nn.Sequential(
        nn.Conv2d(channels, 96, kernel_size=11, stride=4, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(features, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, 4096),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(4096, classes),
    )
