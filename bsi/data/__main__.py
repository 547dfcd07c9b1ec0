"""``python -m bsi.data prepare {binarized_mnist,text8,cifar10,imagenet32,mnist5k} --root DIR``: convert a dataset once.

The official files go in ``DIR/NAME/``; the result is ``DIR/NAME/NAME.h5``.  Problems with the
files print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from .datasets import DATASETS, prepare
from .errors import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bsi.data", description="Convert datasets into uint8 HDF5.")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the official files in ROOT/NAME/ into ROOT/NAME/NAME.h5")
    prep.add_argument("name", choices=[name for name, s in DATASETS.items() if s.convert is not None])
    prep.add_argument("--root", required=True, help="data directory (the one data.root names)")
    prep.add_argument("--force", action="store_true", help="convert again even if a valid file exists")
    prep.add_argument("--no-verify-md5", dest="verify_md5", action="store_false",
                      help="cifar10: skip the archive's md5 check (a local copy you trust; unpickling runs code)")
    args = parser.parse_args(argv)
    try:
        path = prepare(args.name, args.root, force=args.force, verify_md5=args.verify_md5)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name} ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
