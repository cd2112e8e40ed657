"""``kafkite user add|list|delete``: the SCRAM user store in a broker's data directory.

The store is a file in the data directory, so these commands work whether or not the broker runs (a running
broker picks up changes on the next authentication).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from kafkite.config import load_config
from kafkite.security.scram import DEFAULT_ITERATIONS, HASHES, MECHANISM_CODES
from kafkite.security.users import UserStore

if TYPE_CHECKING:
    from kafkite.tools import Subcommands


def _data_dir(args: argparse.Namespace) -> str:
    if args.log_dirs:
        return str(args.log_dirs)

    return str(load_config(args.config, args.override or []).data_dir)


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    if args.password_env:
        value = os.environ.get(args.password_env)
        if value is None:
            raise ValueError(f"environment variable {args.password_env} is not set")
        return value
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the passwords differ")
    return first


def cmd_user(args: argparse.Namespace) -> int:
    from pathlib import Path

    try:
        store = UserStore.in_dir(Path(_data_dir(args)))
        if args.user_command == "add":
            mechanisms = [m.strip().upper() for m in args.mechanism.split(",") if m.strip()]
            for m in mechanisms:
                if m not in HASHES:
                    raise ValueError(f"unknown mechanism {m} (use {', '.join(sorted(HASHES))})")
            password = _password(args)
            if not password:
                raise ValueError("empty password")
            store.add_user(args.name, password, mechanisms, args.iterations)
            print(f"user {args.name}: {', '.join(mechanisms)} credentials saved in {store.path}")
        elif args.user_command == "delete":
            if not store.delete_user(args.name):
                print(f"kafkite: no user {args.name}", file=sys.stderr)
                return 1
            print(f"user {args.name} deleted")
        else:
            users = store.users()
            rows: list[dict[str, Any]] = [
                {
                    "user": name,
                    "credentials": [
                        {"mechanism": m, "iterations": c.iterations} for m, c in sorted(creds.items())
                    ],
                }
                for name, creds in sorted(users.items())
            ]
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                for row in rows:
                    creds = ", ".join(f"{c['mechanism']} ({c['iterations']})" for c in row["credentials"])
                    print(f"{row['user']}\t{creds}")
    except (ValueError, OSError) as e:
        print(f"kafkite: {e}", file=sys.stderr)
        return 2
    return 0


def _where(p: argparse.ArgumentParser, default: Any) -> None:
    p.add_argument(
        "--config", metavar="FILE", default=default, help="the broker's server.properties (log.dirs)"
    )
    p.add_argument(
        "--override", metavar="KEY=VALUE", action="append", default=default, help="a broker configuration key"
    )
    p.add_argument("--log-dirs", metavar="DIR", default=default, help="the broker's data directory")


def add_parser(sub: Subcommands) -> None:
    p = sub.add_parser("user", help="add, list and delete SASL/SCRAM users in a broker's data directory")
    _where(p, None)
    # The same options after the subcommand (``kafkite user add alice --log-dirs ./data``).
    where = argparse.ArgumentParser(add_help=False)
    _where(where, argparse.SUPPRESS)
    usub = p.add_subparsers(dest="user_command", required=True)
    a = usub.add_parser("add", help="create a user or change its password", parents=[where])
    a.add_argument("name")
    a.add_argument("--password", help="the password (default: prompt, or one line on stdin)")
    a.add_argument("--password-env", metavar="VAR", help="read the password from this environment variable")
    a.add_argument(
        "--mechanism",
        default=",".join(sorted(MECHANISM_CODES)),
        help="SCRAM-SHA-256, SCRAM-SHA-512 or both, comma-separated (default both)",
    )
    a.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help="PBKDF2 iterations (4096-16384)"
    )
    ls = usub.add_parser("list", help="list users and their SCRAM mechanisms", parents=[where])
    ls.add_argument("--json", action="store_true", help="JSON output")
    d = usub.add_parser("delete", help="delete a user", parents=[where])
    d.add_argument("name")
    p.set_defaults(func=cmd_user)
