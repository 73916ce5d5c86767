"""Train the digits MLP as a kubetune trial, using the trial SDK.

Parameters come from the SDK (``KUBETUNE_PARAMS``) and fall back to the command line:
``lr``, ``hidden``, ``optimizer`` (adam | sgd) and ``momentum`` (sgd only). It trains up
to the scheduler's ``max_resource`` epochs (else ``--epochs``) and reports ``val_loss``
and ``val_accuracy`` after every epoch, step = epoch (1-based). On ``pause`` it saves a
checkpoint (model, optimizer, epoch) and exits 0; on ``stop`` it exits 0; when started
with ``KUBETUNE_RESUME=1`` it continues after the latest checkpoint's epoch.

By hand, without kubetune (reports become ``epoch=...`` lines on stdout)::

    python trial_image/examples/digits.py --lr 0.01 --hidden 64 --optimizer adam --epochs 5

On a GPU: ``--device auto`` (the default) uses CUDA when torch sees one, so nothing
changes in an experiment whose trial pods request ``nvidia.com/gpu: 1`` in the trial
image (a CUDA build of torch); force it with ``--device cuda``, which fails loudly if
CUDA is missing. Locally, on a machine with a GPU and a CUDA build of torch::

    python trial_image/examples/digits.py --device cuda --epochs 20
"""

from __future__ import annotations

import argparse
import logging
import sys

import digits_model as dm

import kubetune_trial as kt


def config_from(args: argparse.Namespace) -> dm.Config:
    # The SDK's parameters win: with {{params.NAME}} substitution the flags agree anyway,
    # and without it they are only the defaults of a hand run.
    params = kt.params()
    info = kt.trial_info()
    optimizer = str(params.get("optimizer", args.optimizer))
    hidden = params.get("hidden", args.hidden)
    if isinstance(hidden, float) and hidden.is_integer():
        hidden = int(hidden)  # A search space may sample an int as 64.0.
    if not isinstance(hidden, int) or isinstance(hidden, bool):
        raise ValueError(f"hidden must be an integer, got {hidden!r}")
    return dm.Config(
        lr=float(params.get("lr", args.lr)),
        hidden=hidden,
        optimizer=optimizer,
        # Inactive for adam, so absent from the trial's parameters: the flag default stays.
        momentum=float(params.get("momentum", args.momentum)) if optimizer == "sgd" else 0.0,
        epochs=info.max_resource if info.max_resource is not None else args.epochs,
        device=args.device,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    dm.add_arguments(parser)
    args = parser.parse_args(argv)
    # Decisions other than continue (with the runner's reason) and retries go to stderr.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)

    try:
        config = config_from(args)
        dm.check_config(config)
        device = dm.pick_device(config.device)
    except ValueError as err:
        print(f"digits: {err}", file=sys.stderr)
        return 2

    dm.configure_determinism(config.seed)
    data = dm.load_data(device)
    model, optimizer = dm.build(config, device)

    first_epoch = 1
    if kt.trial_info().resume:
        checkpoint = kt.load_checkpoint()
        if checkpoint is None:
            print("digits: asked to resume but no checkpoint found; starting over", file=sys.stderr)
        else:
            first_epoch = dm.restore(checkpoint[1], model, optimizer, device) + 1

    epoch = first_epoch - 1
    for epoch in range(first_epoch, config.epochs + 1):
        dm.train_epoch(model, optimizer, data, config.seed, epoch)
        val_loss, val_accuracy = dm.evaluate(model, data)
        decision = kt.report(epoch, val_loss=val_loss, val_accuracy=val_accuracy)
        if decision == kt.Decision.PAUSE:
            kt.save_checkpoint(dm.snapshot(model, optimizer, epoch), epoch)
            return 0
        if decision == kt.Decision.STOP:
            return 0

    # Budget reached: keep the final state too, so a trial whose budget later grows
    # (a scheduler promoting it to a higher rung) resumes instead of starting over.
    if kt.trial_info().checkpoint_uri and epoch >= first_epoch:
        kt.save_checkpoint(dm.snapshot(model, optimizer, epoch), epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
