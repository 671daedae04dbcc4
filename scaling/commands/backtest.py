"""`scaling backtest SWEEP` (or `--runs FILE`): hold out each arm's largest budget, fit the rest,
and compare the predicted N* and L* (both approaches, with intervals) with the held-out budget's
own vertex and runs. The work is scaling/workflows/backtest.py's."""

from __future__ import annotations

import argparse

from scaling.commands.predict import add_source_arguments, report, source_request


def configure(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from scaling.workflows.backtest import backtest_table
    from scaling.workflows.fit import ProgressLine

    request, _, _ = source_request(args, "backtest")
    result = backtest_table(request, ProgressLine("bootstrap") if args.bootstrap else None)
    report(args, "backtest", result.rows, result.text, result.warnings)
    return 0
