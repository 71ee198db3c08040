"""`python -m runtime.bundle APPROX.onnx --target host|aarch64 --out DIR`: write a deployment
bundle (see runtime.bundle), or check one with `--verify DIR`."""

import argparse
import sys

from runtime.bundle import BACKENDS, BundleError, build, verify
from runtime.bundle.toolchain import TARGETS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.bundle", description=__doc__.splitlines()[0],
                                epilog="example: python -m runtime.bundle out/r20.1L2L.onnx --target aarch64 "
                                       "--results r.json --out bundle-pi")
    p.add_argument("model", nargs="?", metavar="APPROX.onnx")
    p.add_argument("--target", choices=TARGETS, default="host")
    p.add_argument("--backend", choices=BACKENDS, default="ort")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--results", metavar="RESULTS.json", help="`python -m eval run --json` output of this model")
    p.add_argument("--verify", metavar="DIR", help="check a bundle's files against its manifest and exit")
    args = p.parse_args(argv)
    try:
        if args.verify:
            manifest = verify(args.verify)
            print(f"{args.verify}: {len(manifest['files'])} files match the manifest ({manifest['target']})")
            return 0
        if not args.model or not args.out:
            p.error("APPROX.onnx and --out are required (or --verify DIR)")
        manifest = build(args.model, args.target, args.out, args.backend, args.results)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: bundle for {manifest['target']} ({', '.join(sorted(manifest['files']))}, "
          f"manifest.json, README.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
