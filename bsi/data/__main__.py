"""``python -m bsi.data prepare {cifar10,imagenet32} --root DIR``: convert a dataset once."""

from __future__ import annotations

import argparse
import sys

from .convert import CONVERTERS, DatasetError, prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsi.data", description="Convert datasets into uint8 HDF5.")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the official files under --root into ROOT/NAME.h5")
    prep.add_argument("name", choices=sorted(CONVERTERS))
    prep.add_argument("--root", required=True, help="directory holding the downloaded files")
    args = parser.parse_args(argv)
    try:
        path = prepare(args.name, args.root)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name} ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
