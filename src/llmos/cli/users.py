"""``llmos users create | list | key | revoke``: users and API keys in the store."""

from __future__ import annotations

import argparse
import sys

from llmos.cli.flags import Subcommands
from llmos.errors import LlmosError


def add_users(sub: Subcommands) -> None:
    """``llmos users ACTION``."""
    us = sub.add_parser(
        "users", help="users and API keys in the store ($LLMOS_DATABASE_URL or a SQLite file)"
    ).add_subparsers(dest="action", required=True)
    uc = us.add_parser("create", help="create a user and print their API key once")
    uc.add_argument("name")
    uc.add_argument("--admin", action="store_true", help="may manage models and users")
    uc.set_defaults(func=_users)
    us.add_parser("list", help="list users").set_defaults(func=_users)
    uk = us.add_parser("key", help="issue another API key to a user and print it once")
    uk.add_argument("name")
    uk.set_defaults(func=_users)
    ur = us.add_parser(
        "revoke",
        help="revoke an API key (running servers refuse it within their --auth-cache seconds)",
    )
    ur.add_argument("key", help="the API key, or - to read it from standard input")
    ur.set_defaults(func=_users)


def _users(args: argparse.Namespace) -> int:
    from llmos.store.db import PREFIX_LENGTH, Store

    store = Store()
    try:
        if args.action == "create":
            user, key = store.create_user(args.name, admin=args.admin)
            role = "admin" if user.is_admin else "user"
            # engine.url prints as the URL with its password masked
            print(f"created {role} {user.name!r} (id {user.id}) in {store.engine.url}")
            print(f"API key (shown once, store it now): {key}")
        elif args.action == "key":
            user = store.user(args.name)
            if user is None:
                raise LlmosError(f"no user named {args.name!r} (see `llmos users list`)")
            print(
                f"API key for {user.name!r} (shown once, store it now): {store.create_key(user.id)}"
            )
        elif args.action == "revoke":
            key = sys.stdin.readline().strip() if args.key == "-" else args.key.strip()
            if not store.revoke_key(key):
                raise LlmosError("no such API key, or it is revoked already")
            print(f"revoked the key {key[:PREFIX_LENGTH]}...")
        else:
            for u in store.users():
                print(f"{u.id:>5}  {u.name:<30} {'admin' if u.is_admin else 'user'}")
    finally:
        store.close()
    return 0
