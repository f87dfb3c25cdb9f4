"""python -m convert: see convert/__init__.py."""
import argparse
import sys

import loopjax
from loopjax.io.loading import convert_to_hf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert", description=__doc__)
    ap.add_argument("src", help="HF checkpoint dir, hub id ORG/NAME, orbax dir or builtin:NAME")
    ap.add_argument("out", help="output folder (must not exist)")
    ap.add_argument("--revision", default=None, help="hub revision of SRC")
    ap.add_argument("--dtype", default=None, help="store the weights in this dtype (default: as stored)")
    ap.add_argument("--to-hf", action="store_true", help="write HF safetensors instead of orbax")
    ap.add_argument("--shards", type=int, default=1, help="with --to-hf: number of safetensors shards")
    args = ap.parse_args(argv)
    try:
        if args.to_hf:
            convert_to_hf(args.src, args.out, revision=args.revision, dtype=args.dtype, shards=args.shards)
        else:
            loopjax.convert(args.src, args.out, revision=args.revision, dtype=args.dtype)
    except (ValueError, OSError, NotImplementedError) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    print(f"converted {args.src} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
