"""`python -m varpd.svp_server ARGS` = `varpd svp-server ARGS` (also before the noun is registered)."""

import argparse
import sys

from varpd.cli.client import CliError
from varpd.cli.svp_server import add_parsers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="varpd")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["svp-server", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except CliError as exc:
        print(f"varpd: svp-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
