"""The digits MLP as a distributed trial: DistributedDataParallel over `spec.workers` ranks.

kubetune starts one process (locally) or pod (on a cluster) per rank with WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set; this script only calls
``init_process_group(init_method="env://")``, with backend ``gloo`` on CPU and ``nccl``
on CUDA (one GPU per rank: ``cuda:LOCAL_RANK``). Each rank trains on its own slice of
every epoch's batches; DDP all-reduces the gradients, so the ranks hold the same model.

Every rank reports (rank 0's values count, and every rank gets the same decision for the
step, so all pause or stop together) and every rank saves its own checkpoint shard on
pause; a resumed gang starts from the last epoch every rank saved. Reporting from rank
0 only also works, if rank 0 then tells the others (``dist.broadcast_object_list``).

By hand, two ranks on one machine (reports become ``epoch=...`` lines)::

    torchrun --nproc-per-node 2 trial_image/examples/digits_ddp.py --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import digits_model as dm
import torch
import torch.distributed as dist
from digits import config_from
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import kubetune_trial as kt


def setup(device_choice: str) -> torch.device:
    """Join the gang (when there is one) and pick this rank's device."""
    device = dm.pick_device(device_choice)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return device


def train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: dm.Data, seed: int, epoch: int
) -> None:
    """dm.train_epoch over this rank's share of each batch (the same shuffle on all ranks)."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model.train()
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(data.x_train), generator=generator).to(data.x_train.device)
    loss_fn = nn.CrossEntropyLoss()
    step = dm.BATCH_SIZE * world
    for start in range(0, len(order) - step + 1, step):
        # Equal shares on every rank: DDP's all-reduce needs every rank at every step.
        batch = order[start + rank * dm.BATCH_SIZE : start + (rank + 1) * dm.BATCH_SIZE]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(data.x_train[batch]), data.y_train[batch]).backward()
        optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dm.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        config = config_from(args)
        dm.check_config(config)
        device = setup(config.device)
    except ValueError as err:
        print(f"digits_ddp: {err}", file=sys.stderr)
        return 2

    dm.configure_determinism(config.seed)  # the same initial weights on every rank
    data = dm.load_data(device)
    plain, optimizer = dm.build(config, device)
    first_epoch = 1
    # Before DDP wraps the model (its first collective): each rank loads its own shard
    # of the newest epoch every rank saved.
    if kt.trial_info().resume and (checkpoint := kt.load_checkpoint()) is not None:
        first_epoch = dm.restore(checkpoint[1], plain, optimizer, device) + 1
    model: nn.Module = DistributedDataParallel(plain) if dist.is_initialized() else plain

    epoch = first_epoch - 1
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            train_epoch(model, optimizer, data, config.seed, epoch)
            val_loss, val_accuracy = dm.evaluate(plain, data)
            decision = kt.report(epoch, val_loss=val_loss, val_accuracy=val_accuracy)
            if decision == kt.Decision.PAUSE:
                kt.save_checkpoint(dm.snapshot(plain, optimizer, epoch), epoch)
                return 0
            if decision == kt.Decision.STOP:
                return 0
        if kt.trial_info().checkpoint_uri and epoch >= first_epoch:
            kt.save_checkpoint(dm.snapshot(plain, optimizer, epoch), epoch)
        return 0
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
