"""python -m tests.controlplane {build,start,stop,status} ...

  build               build (or find in the cache) the binaries; print their folder
  start --dir DIR     start etcd and kube-apiserver; write DIR/kubeconfig
  stop --dir DIR      stop them
  status --dir DIR    say whether they run
"""

from __future__ import annotations

import argparse
import sys

from .cluster import ControlPlane, ControlPlaneError, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.controlplane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the binaries, print their folder")
    for name in ("start", "stop", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, help="state folder (kubeconfig, logs, etcd data)")
        if name == "start":
            p.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(build())
            return 0
        cp = ControlPlane(args.dir)
        if args.command == "start":
            if cp.is_running():
                print(f"already running: {cp.server}\nexport KUBECONFIG={cp.kubeconfig}")
                return 0
            cp.start(timeout=args.timeout)
            print(f"ready in {cp.startup_seconds:.2f}s: {cp.server}")
            print(f"export KUBECONFIG={cp.kubeconfig}")
            print(f"kubectl: {cp.bin_dir}/bin/kubectl")
            return 0
        if args.command == "stop":
            was = cp.is_running()
            cp.stop()
            print("stopped" if was else "not running")
            return 0
        if args.command == "status":
            if cp.is_running():
                print(f"running: {cp.server}\nexport KUBECONFIG={cp.kubeconfig}")
                return 0
            print("not running")
            return 3
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
