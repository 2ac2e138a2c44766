"""``ranker``: one command line for every step (simulate, features, train, evaluate, serve...).

Each subcommand lives in a small module of this package; heavy libraries (torch, lightgbm,
onnxruntime) are imported inside the command that needs them so that ``ranker --help`` and the
data commands start fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ops.cli import data, demo, libsvm_cmd, models, online


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ranker", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (data, libsvm_cmd, models, online, demo):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The ONNX exporter's graph passes log every deduplicated initializer at INFO.
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return int(args.run(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as e:
        # Bad input: a clear message naming the problem, not a traceback.
        print(f"ranker {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
