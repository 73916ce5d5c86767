"""The digits MLP shared by ``digits.py`` (SDK) and ``digits_logs.py`` (log lines).

scikit-learn's bundled 8x8 digits (1,797 images, no download) and a one-hidden-layer
MLP: small enough that an epoch takes tens of milliseconds on a CPU, real enough that
learning rate, width and optimizer visibly matter.

Determinism: the train/validation split is fixed (same for every trial, so trials are
compared on the same data), weights are initialised from ``seed``, and each epoch's
shuffle comes from ``(seed, epoch)`` alone, so a run paused and resumed from a
checkpoint reproduces the uninterrupted run exactly (on CPU; on CUDA up to the
determinism cuBLAS offers, which ``configure_determinism`` asks for).
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn

SPLIT_SEED = 0  # Fixed on purpose: the validation set must not vary with a trial's seed.
VALIDATION_FRACTION = 0.25
BATCH_SIZE = 64


@dataclass(frozen=True)
class Config:
    lr: float
    hidden: int
    optimizer: str
    momentum: float
    epochs: int
    device: str
    seed: int


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--momentum", type=float, default=0.9, help="sgd only")
    parser.add_argument("--epochs", type=int, default=10, help="when no max_resource is given")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)


def check_config(config: Config) -> None:
    if not config.lr > 0:
        raise ValueError(f"lr must be > 0, got {config.lr}")
    if config.hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {config.hidden}")
    if config.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be adam or sgd, got {config.optimizer!r}")
    if not 0 <= config.momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {config.momentum}")
    if config.epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {config.epochs}")


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but CUDA is not available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def configure_determinism(seed: int) -> None:
    # cuBLAS is only reproducible with a fixed workspace; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: an op without a deterministic CUDA kernel should warn, not kill the trial.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)


def load_data(device: torch.device) -> Data:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels are 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = int(len(x) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return Data(
        x_train=x[train].to(device),
        y_train=y[train].to(device),
        x_val=x[val].to(device),
        y_val=y[val].to(device),
    )


def build(config: Config, device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(64, config.hidden), nn.ReLU(), nn.Linear(config.hidden, 10))
    model.to(device)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return model, optimizer


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: Data, seed: int, epoch: int
) -> None:
    model.train()
    # Shuffle from (seed, epoch) only: no RNG state to carry across a pause and resume.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(data.x_train), generator=generator).to(data.x_train.device)
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, len(order), BATCH_SIZE):
        batch = order[start : start + BATCH_SIZE]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(data.x_train[batch]), data.y_train[batch]).backward()
        optimizer.step()


@torch.no_grad()
def evaluate(model: nn.Module, data: Data) -> tuple[float, float]:
    """Validation (loss, accuracy)."""
    model.eval()
    logits = model(data.x_val)
    loss = nn.functional.cross_entropy(logits, data.y_val).item()
    accuracy = (logits.argmax(dim=1) == data.y_val).float().mean().item()
    return loss, accuracy


def snapshot(model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
        buffer,
    )
    return buffer.getvalue()


def restore(
    data: bytes, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> int:
    """Load a ``snapshot`` into ``model`` and ``optimizer``; returns its epoch."""
    # weights_only: a checkpoint is read back from shared storage, never unpickle code.
    state: dict[str, Any] = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"])
