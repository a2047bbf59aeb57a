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


def synthetic_training_step(batch: int, image_size: int, precision: str = "fp32") -> Any:
    """A closure running one SGD step (lr 0.01) of the d2l network on a fixed synthetic batch;
    `precision="bf16"` runs it under `torch.autocast("cpu", torch.bfloat16)`, as Keras's
    `mixed_bfloat16` policy. The model is in training mode (dropout on)."""
    import torch

    torch.manual_seed(0)
    model = torch_alexnet(image_size=image_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.rand(batch, 1, image_size, image_size)
    labels = torch.randint(0, 10, (batch,))
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()

    return step
