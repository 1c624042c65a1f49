"""Operator CLI: python -m bridge up|down|status [--netns NAME] [--bridge NAME] [--subnet CIDR] [--json]."""

import argparse
import json
import os
import sys
from typing import Any

from bridge.errors import BridgeError
from bridge.network import BackendNetwork

PROG = "python -m bridge"


def build_parser() -> argparse.ArgumentParser:
    defaults = BackendNetwork()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--netns", default=defaults.netns, help="network namespace (default %(default)s)")
    common.add_argument("--bridge", default=defaults.bridge, help="bridge name (default %(default)s)")
    common.add_argument("--subnet", default=str(defaults.subnet), help="backend subnet (default %(default)s)")
    common.add_argument("--json", action="store_true", help="print the status as JSON")
    parser = argparse.ArgumentParser(prog=PROG, description="Manage ukproxy's backend network namespace.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status}")
    commands.add_parser("up", parents=[common], help="create or repair namespace, bridge and TAPs")
    commands.add_parser("down", parents=[common], help="remove TAPs, bridge and namespace")
    commands.add_parser("status", parents=[common], help="show what exists")
    return parser


def format_status(status: dict[str, Any]) -> str:
    if not status["netns_exists"]:
        return f"namespace {status['netns']}: absent"
    lines = [f"namespace {status['netns']}: present  subnet {status['subnet']}  gateway {status['gateway']}"]
    bridge = status["bridge"]
    if bridge["present"]:
        state = "up" if bridge["up"] else "DOWN"
        addresses = ", ".join(bridge["addresses"]) or "no address"
        warning = "" if bridge["gateway_ok"] else f"  (expected {status['gateway']}; run up)"
        lines.append(f"bridge {bridge['name']}: {state}  {addresses}  mac {bridge['mac']}{warning}")
    else:
        lines.append(f"bridge {bridge['name']}: MISSING (run up)")
    if not status["taps"]:
        lines.append("taps: none")
    for tap in status["taps"]:
        state = "up" if tap["up"] else "DOWN"
        where = "on bridge" if tap["on_bridge"] else "NOT on bridge"
        owner = "root" if tap["owner_uid"] is None else f"uid {tap['owner_uid']}"
        lines.append(f"tap {tap['name']}: {state}  link {tap['operstate']}  {where}  owner {owner}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        network = BackendNetwork(netns=args.netns, bridge=args.bridge, subnet=args.subnet)
    except ValueError as e:
        raise ValueError(f"bad --netns/--bridge/--subnet: {e}") from None
    if args.command == "up":
        network.up()
    elif args.command == "down":
        network.down()
        if not args.json:
            print(f"namespace {network.netns}: removed")
        return 0
    status = network.status()
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print(f"{PROG}: must run as root (network namespaces and TAPs need CAP_NET_ADMIN)", file=sys.stderr)
        return 1
    try:
        return run(args)
    except (BridgeError, ValueError, OSError) as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
