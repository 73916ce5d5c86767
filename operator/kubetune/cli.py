"""The `kubetune` command."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kubetune import __version__

EXIT_USAGE = 2
# What `kubetune operator` imports beyond the base install (the `operator` extra). Every
# other command must work without them: the README's first command installs no extra
# but `torch`, so the operator's modules are imported only for `kubetune operator`.
OPERATOR_MODULES = ("kopf", "kubernetes", "prometheus_client")
OPERATOR_EXTRA_HINT = "pip install 'kubetune[operator]'"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand argv names: the first word that is not an option (the top-level
    options, --help and --version, take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def missing_operator_modules() -> list[str]:
    return [name for name in OPERATOR_MODULES if importlib.util.find_spec(name) is None]


def build_parser(*, operator_arguments: bool = False) -> argparse.ArgumentParser:
    """The command line. The `operator` subcommand's own options come from the operator
    package, which imports kopf: only when `operator_arguments` (the command is it)."""
    parser = argparse.ArgumentParser(
        prog="kubetune", description="Hyperparameter optimization, on Kubernetes or locally."
    )
    parser.add_argument("--version", action="version", version=f"kubetune {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run an HPOExperiment locally, trials as processes")
    run.add_argument("file", type=Path, help="the experiment YAML")
    run.add_argument("--output", "-o", type=Path, help="write results as JSON to this file")
    run.add_argument("--parallel", type=_positive, help="override budget.parallelTrials")
    run.add_argument(
        "--state-dir",
        type=Path,
        help="where the run's state lives (default: .kubetune/<name> beside the YAML)",
    )
    run.add_argument(
        "--fresh", action="store_true", help="move the previous state aside and start over"
    )
    view = run.add_mutually_exclusive_group()
    view.add_argument("--live", dest="live", action="store_true", default=None)
    view.add_argument("--no-live", dest="live", action="store_false")
    run.add_argument(
        "--metrics-port", type=_positive, help="serve Prometheus /metrics on 127.0.0.1:PORT"
    )

    validate = commands.add_parser("validate", help="check an experiment YAML and exit")
    validate.add_argument("file", type=Path)

    convert = commands.add_parser(
        "convert", help="print the HPOExperiment equivalent to another tool's experiment"
    )
    convert.add_argument("tool", choices=["katib"], help="katib: a kubeflow.org/v1beta1 Experiment")
    convert.add_argument("file", type=Path)

    operator = commands.add_parser(
        "operator", help="run the Kubernetes operator (needs the `operator` extra)"
    )
    if operator_arguments:
        from kubetune.operator.main import add_arguments

        add_arguments(operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    is_operator = command_of(argv) == "operator"
    if is_operator and (missing := missing_operator_modules()):
        print(
            f"kubetune operator needs the operator extra ({', '.join(missing)} not "
            f"installed): {OPERATOR_EXTRA_HINT}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    args = build_parser(operator_arguments=is_operator).parse_args(argv)
    if args.command == "operator":
        from kubetune.operator.main import run

        return run(args)
    if args.command == "convert":
        from kubetune.convert.katib import main as convert_katib

        return convert_katib(args.file, sys.stdout, sys.stderr)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Imported after parsing: pydantic's models are most of the start-up time of --help.
    from kubetune.spec import SpecError, load_experiment

    try:
        experiment = load_experiment(args.file)
    except SpecError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    if args.command == "validate":
        print(f"{args.file}: {experiment.kind} {experiment.name} is valid")
        return 0
    from kubetune.local.runner import (
        EXIT_INTERRUPTED,
        RunOptions,
        default_state_dir,
        run_experiment,
    )
    from kubetune.local.state import StateError
    from kubetune.observability import MetricsUnavailable

    options = RunOptions(
        state_dir=args.state_dir or default_state_dir(args.file, experiment),
        output=args.output,
        parallel=args.parallel,
        fresh=args.fresh,
        live=args.live,
        metrics_port=args.metrics_port,
    )
    try:
        result = run_experiment(experiment, args.file, options)
    except (StateError, MetricsUnavailable) as error:
        print(f"kubetune: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Ctrl-C before the run's own handler is in place (or after it is gone): the
        # state is as durable as ever, and the next run continues.
        print("kubetune: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.succeeded is False:
        print(f"kubetune: experiment failed: {result.reason}: {result.message}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
