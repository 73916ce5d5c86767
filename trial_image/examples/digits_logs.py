"""Train the digits MLP without the trial SDK: metrics go out as log lines.

Each epoch prints ``epoch=N val_loss=... val_accuracy=...`` on stdout, which kubetune
parses as a report whose step is the epoch (docs/trial-protocol.md, "Log lines").
Parameters come only from the command line, so an experiment passes them with
``{{params.NAME}}`` substitutions, e.g.
``args: ["--lr", "{{params.lr}}", "--hidden", "{{params.hidden}}"]``. Such a script
cannot be paused: kubetune stops it instead and reruns it from scratch on resume.

The epoch budget is ``KUBETUNE_MAX_RESOURCE`` when the runner sets it, else ``--epochs``.
"""

from __future__ import annotations

import argparse
import os
import sys

import digits_model as dm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dm.add_arguments(parser)
    args = parser.parse_args(argv)
    max_resource = os.environ.get("KUBETUNE_MAX_RESOURCE")
    config = dm.Config(
        lr=args.lr,
        hidden=args.hidden,
        optimizer=args.optimizer,
        momentum=args.momentum if args.optimizer == "sgd" else 0.0,
        epochs=int(max_resource) if max_resource else args.epochs,
        device=args.device,
        seed=args.seed,
    )
    try:
        dm.check_config(config)
        device = dm.pick_device(config.device)
    except ValueError as err:
        print(f"digits_logs: {err}", file=sys.stderr)
        return 2

    dm.configure_determinism(config.seed)
    data = dm.load_data(device)
    model, optimizer = dm.build(config, device)
    for epoch in range(1, config.epochs + 1):
        dm.train_epoch(model, optimizer, data, config.seed, epoch)
        val_loss, val_accuracy = dm.evaluate(model, data)
        # flush: the runner reads the log as it is written, and a pipe is block-buffered.
        print(f"epoch={epoch} val_loss={val_loss!r} val_accuracy={val_accuracy!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
