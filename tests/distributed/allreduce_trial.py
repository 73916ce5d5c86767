"""A rank of a distributed trial that really all-reduces with torch.distributed (gloo):
rank r contributes r + 1, so every rank must end with 1 + 2 + ... + WORLD_SIZE. Each
rank reports that sum (rank 0's counts) and writes what it saw to
$GANG_OUT/<trial>.a<attempt>.r<rank>.json."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

import kubetune_trial as kt


def main() -> int:
    info = kt.trial_info()
    # env://: WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT as the operator set them.
    dist.init_process_group("gloo", init_method="env://", timeout=datetime.timedelta(seconds=90))
    value = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(value)
    total = float(value.item())
    seen = {
        "rank": dist.get_rank(),
        "world": dist.get_world_size(),
        "sum": total,
        "master_addr": os.environ["MASTER_ADDR"],
    }
    out = Path(os.environ["GANG_OUT"]) / f"{info.trial}.a{info.attempt}.r{info.rank}.json"
    out.write_text(json.dumps(seen))
    kt.report(1, loss=total)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
