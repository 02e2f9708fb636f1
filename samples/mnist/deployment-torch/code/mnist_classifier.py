"""The torch MNIST classifier: a small CNN over raw 28x28 greyscale bytes (0..255).

Scaling to 0..1 happens inside the network, so scoring scripts feed pixel values as
they come out of the PNG, as Azure ML's tutorial script does.
"""

from __future__ import annotations

import torch
from torch import nn


class MnistClassifier(nn.Module):
    """Two conv blocks and a linear head: (N, 1, 28, 28) pixels → (N, 10) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 10))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels / 255.0))
