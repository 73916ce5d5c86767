"""The digits MLP as a population-based training member: SGD whose learning rate and
momentum kubetune changes during training (trial_image/examples/digits-pbt.yaml).

The script knows nothing of PBT's rules. The SDK says where it starts from (its own
checkpoint after an interruption, or the one another member saved at the exploit step)
and when to checkpoint; the parameters of *this* trial are applied after loading, since
the optimizer's saved state carries the parent's. Each checkpoint also records its
lineage (which trial saved each state it came through, at which epoch).

    python trial_image/examples/digits_pbt.py --lr 0.05 --momentum 0.9 --epochs 5
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any

import digits_model as dm
import torch

import kubetune_trial as kt


def save(model: Any, optimizer: Any, epoch: int, lineage: list[list[Any]]) -> bytes:
    buffer = io.BytesIO()
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lineage": lineage,
    }
    torch.save(state, buffer)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dm.add_arguments(parser)
    args = parser.parse_args(argv)
    params = kt.params()
    info = kt.trial_info()
    config = dm.Config(
        lr=float(params.get("lr", args.lr)),
        hidden=args.hidden,
        optimizer="sgd",
        momentum=float(params.get("momentum", args.momentum)),
        epochs=info.max_resource if info.max_resource is not None else args.epochs,
        device=args.device,
        seed=args.seed,
    )
    dm.check_config(config)
    device = dm.pick_device(config.device)
    dm.configure_determinism(config.seed)
    data = dm.load_data(device)
    model, optimizer = dm.build(config, device)

    first, lineage = 1, []
    if (found := kt.start_checkpoint()) is not None:
        state = torch.load(io.BytesIO(found[1]), map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first, lineage = int(state["epoch"]) + 1, list(state["lineage"])
        for group in optimizer.param_groups:  # this trial's schedule from here on
            group["lr"], group["momentum"] = config.lr, config.momentum
    for epoch in range(first, config.epochs + 1):
        dm.train_epoch(model, optimizer, data, config.seed, epoch)
        val_loss, val_accuracy = dm.evaluate(model, data)
        if kt.checkpoint_due(epoch):  # before the report: others may start from it
            mark = [info.trial or "by-hand", epoch, config.lr, config.momentum]
            kt.save_checkpoint(save(model, optimizer, epoch, [*lineage, mark]), epoch)
        if kt.report(epoch, val_loss=val_loss, val_accuracy=val_accuracy) != kt.Decision.CONTINUE:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
