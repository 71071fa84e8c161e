"""`langlearn server ...` (the private server, the `[local]` extra) and `langlearn db ...` (databases on the configured server)."""

from __future__ import annotations

import argparse

from langlearn import backups, databases, local_server
from langlearn.cli import Parser, Streams
from langlearn.errors import NotConfirmed
from langlearn.settings import check_reachable
from langlearn.urls import redact


def register(commands: argparse._SubParsersAction[Parser]) -> None:
    server = commands.add_parser(
        "server", help="the private PostgreSQL server used when DATABASE_URL is unset, and its client tools",
        description="Manage the private PostgreSQL 16 server (the [local] extra) that runs when DATABASE_URL is unset; "
        "its data lives in $LANGLEARN_DATA_DIR, a checkout's .pgdata/, or the user's data directory.",
    )
    actions = server.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    actions.add_parser("url", help="start it if needed and print its DATABASE_URL").set_defaults(handler=server_url)
    actions.add_parser("status", help="running (exit 0) or stopped (exit 1), and where its data is").set_defaults(handler=server_status)
    actions.add_parser("stop", help="stop it (its data stays; delete the data directory to remove it)").set_defaults(handler=server_stop)
    for tool in local_server.CLIENT_TOOLS:
        client = actions.add_parser(
            tool, help=f"the wheel's {tool}, connected to DATABASE_URL (or the private server); other arguments go to {tool}",
            prefix_chars="\0",  # every argument after the tool's name is the tool's, --help included
        )
        client.add_argument("arguments", nargs=argparse.REMAINDER)
        client.set_defaults(handler=client_tool, tool=tool)

    db = commands.add_parser(
        "db", help="create, drop or reset a database on the configured server",
        description="Create, drop or reset a database on the server of DATABASE_URL (or the private server); "
        "the user needs CREATEDB. A database marked langlearn.environment = production is never dropped.",
    )
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    create = db_actions.add_parser("create", help="create an empty database NAME and print its URL (password hidden)")
    create.add_argument("name", metavar="NAME", type=databases.checked_name)
    create.set_defaults(handler=db_create)
    for action, help in (("drop", "drop database NAME, ending its sessions"), ("reset", "drop database NAME if it exists, then create it empty")):
        command = db_actions.add_parser(action, help=help)
        command.add_argument("name", metavar="NAME", type=databases.checked_name)
        command.add_argument("--yes", action="store_true", help="confirm that every row of NAME may be deleted")
        command.set_defaults(handler=db_drop if action == "drop" else db_reset)


async def server_url(args: argparse.Namespace, streams: Streams) -> int:
    print(local_server.ensure_running(announce=lambda line: print(line, file=streams.err)), file=streams.out)
    return 0


async def server_status(args: argparse.Namespace, streams: Streams) -> int:
    running = local_server.is_running()
    print(f"{'running' if running else 'stopped'}: data in {local_server.data_dir()}", file=streams.out)
    return 0 if running else 1


async def server_stop(args: argparse.Namespace, streams: Streams) -> int:
    print("stopped" if local_server.stop() else "not running", file=streams.out)
    return 0


async def client_tool(args: argparse.Namespace, streams: Streams) -> int:
    url = streams.configured_url()
    await check_reachable(url)  # one line of ours, rather than the tool's own two
    return await backups.run_client(args.tool, url, *args.arguments)


async def db_create(args: argparse.Namespace, streams: Streams) -> int:
    url = await databases.create_database(streams.configured_url(), args.name)
    print(f"created {redact(url)}", file=streams.out)
    return 0


async def db_drop(args: argparse.Namespace, streams: Streams) -> int:
    _confirmed(args)
    dropped = await databases.drop_database(streams.configured_url(), args.name)
    print(f"dropped {args.name}" if dropped else f"{args.name} does not exist; nothing to drop", file=streams.out)
    return 0


async def db_reset(args: argparse.Namespace, streams: Streams) -> int:
    _confirmed(args)
    url = streams.configured_url()
    await databases.drop_database(url, args.name)
    print(f"reset {redact(await databases.create_database(url, args.name))}", file=streams.out)
    return 0


def _confirmed(args: argparse.Namespace) -> None:
    if not args.yes:
        raise NotConfirmed(f"`langlearn db {args.action} {args.name}` deletes every row of {args.name}; add --yes to confirm")
