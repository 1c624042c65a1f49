"""`ukproxy run|check|reload|stop|quit -c FILE`: the operator's commands, like nginx's -t and -s."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import tomllib

from ukproxy.config import Config, ConfigError, load
from ukproxy.pidfile import AlreadyRunning, read_pid, read_status

DEFAULT_CONFIG = "conf/ukproxy.toml"
SIGNALS = {"reload": signal.SIGHUP, "stop": signal.SIGTERM, "quit": signal.SIGQUIT, "reopen": signal.SIGUSR1}


def _load_or_report(path: str) -> Config | None:
    try:
        return load(path)
    except ConfigError as e:
        for issue in e.issues:
            print(f"ukproxy: {issue}", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        print(f"ukproxy: configuration file {args.config} test failed", file=sys.stderr)
        return 1
    from ukproxy.tls.check import expiry_warnings

    for warning in expiry_warnings(config):
        print(f"ukproxy: warning: {warning}", file=sys.stderr)
    print(f"ukproxy: configuration file {args.config} syntax is ok")
    print(f"ukproxy: configuration file {args.config} test is successful")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return 1
    if args.daemon:
        _daemonize()
    from ukproxy.master import run_master

    try:
        return run_master(config)
    except AlreadyRunning as e:
        print(f"ukproxy: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ukproxy: {e.strerror or e}", file=sys.stderr)
        return 1


def _daemonize() -> None:
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def cmd_signal(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    pid_path = config.pid_file if config else _pid_file_fallback(args.config)
    if args.command == "reload" and config is None:
        print("ukproxy: not reloading: the new configuration is invalid (the running one stays)", file=sys.stderr)
        return 1
    pid = read_pid(pid_path)
    if pid is None:
        print(f"ukproxy: no running master found (pid file {pid_path})", file=sys.stderr)
        return 1
    before = read_status(pid_path)
    os.kill(pid, SIGNALS[args.command])
    if args.command == "reload":
        return _wait_for_reload(pid_path, before, args.timeout)
    if args.command in ("stop", "quit") and args.wait:
        deadline = time.monotonic() + args.timeout
        while read_pid(pid_path) == pid and time.monotonic() < deadline:
            time.sleep(0.05)
        if read_pid(pid_path) == pid:
            print(f"ukproxy: master {pid} still running after {args.timeout}s", file=sys.stderr)
            return 1
    return 0


def _wait_for_reload(pid_path: str, before: tuple[int, int, str] | None, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read_status(pid_path)
        if now is not None and now != before:
            if now[2] == "reloaded":
                print("ukproxy: reloaded")
                return 0
            print("ukproxy: reload failed, the old configuration keeps running (see the error log)", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"ukproxy: no answer to the reload within {timeout}s", file=sys.stderr)
    return 1


def _pid_file_fallback(path: str) -> str:
    """The pid file of a config that no longer validates: its own pid_file key if readable, else the default."""
    try:
        with open(path, "rb") as f:
            named = tomllib.load(f).get("pid_file")
    except (OSError, tomllib.TOMLDecodeError):
        named = None
    return named if isinstance(named, str) else Config(path=path, workers=1).pid_file


def cmd_status(args: argparse.Namespace) -> int:
    from ukproxy.status_cli import print_status

    return print_status(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ukproxy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("run", "run the master and its workers in the foreground"),
        ("check", "validate the configuration, like nginx -t"),
        ("reload", "re-read the configuration without dropping connections (SIGHUP)"),
        ("stop", "fast stop (SIGTERM)"),
        ("quit", "graceful stop: finish open connections (SIGQUIT)"),
        ("reopen", "reopen the log files (SIGUSR1)"),
        ("status", "show the fleet: workers, VMs, connections"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="configuration file (TOML)")
        if name == "run":
            p.add_argument("--daemon", action="store_true", help="detach from the terminal")
        if name in ("reload", "stop", "quit", "reopen"):
            p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the outcome")
            p.add_argument("--wait", action="store_true", help="stop/quit: wait until the master has exited")
        if name == "status":
            p.add_argument("--json", action="store_true", help="print the raw JSON")
    from ukproxy.cluster import cli as cluster_cli

    cluster_cli.add_parser(sub, DEFAULT_CONFIG)
    args = parser.parse_args(argv)
    handler = {"run": cmd_run, "check": cmd_check, "status": cmd_status, "cluster": cluster_cli.cmd_cluster}.get(
        args.command, cmd_signal)
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
