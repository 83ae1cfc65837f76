"""``switchboard`` command: generate the registration, run, or start the local demo."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import signal
import sys
from pathlib import Path

from . import logs
from .config import ConfigError, generate, load
from .db.lockfile import DatabaseInUse

log = logging.getLogger("appservice")


def _stop_on_signals() -> asyncio.Event:
    """Set on SIGTERM or SIGINT (a supervisor stopping us, or Ctrl-C)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def wait_for_stop_signal() -> None:
    await _stop_on_signals().wait()


async def run(config_path: Path) -> int:
    """Serve until SIGTERM or SIGINT; the exit status.

    Start-up may wait a long time (for the homeserver, for PostgreSQL) and a signal ends that
    wait at once. An operator's mistake is one ERROR line and exit status 1; anything else
    that breaks start-up is logged once with its traceback, and the status is 1 too: never a
    process that keeps its ports open and answers nothing."""
    from .bootstrap import Switchboard
    from .startup import StartupError

    config = load(config_path)  # upgraded in memory only: the file may be read-only
    logs.configure(config)
    logs.log_notes(config)
    stop = _stop_on_signals()
    switchboard = Switchboard(config)
    starting = asyncio.create_task(switchboard.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("stopping before start-up finished")
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return 0
        try:
            starting.result()
        except (StartupError, DatabaseInUse) as e:
            log.error("%s", e)
            return 1
        except Exception:
            log.exception("start-up failed")
            return 1
        await stopping
        log.info("stopping")
        return 0
    finally:
        stopping.cancel()
        try:
            await switchboard.stop()
        except Exception:
            log.warning("could not stop cleanly", exc_info=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().remove_signal_handler(sig)


def _stopped_early(signum: int, frame: object) -> None:
    raise SystemExit(0)


def version() -> str:
    """The installed distribution's version (from its metadata, so it is the wheel's)."""
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _maintain(args: argparse.Namespace) -> int:
    from . import maintenance

    config = load(args.config)
    try:
        if args.command == "backup":
            pages = maintenance.backup(config, args.destination)
            print(f"Copied the database to {args.destination} ({pages} pages).")
            return 0
        if args.to is None:
            state = asyncio.run(maintenance.show_schema(config))
            print(f"database schema: {state.current or 'empty (never migrated)'}")
            print(f"this version migrates to: {state.head} (knows {', '.join(state.known)})")
            return 0
        before, after = asyncio.run(maintenance.migrate(config, args.to))
        print(f"database schema: {before.current or 'empty'} -> {after.current or 'empty'}")
        return 0
    except maintenance.MaintenanceError as e:
        print(f"switchboard: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="fill in secrets and write the homeserver registration")
    gen.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    gen.add_argument("-r", "--registration", type=Path, default=Path("registration.yaml"))
    run_p = sub.add_parser("run", help="run Switchboard next to your homeserver")
    run_p.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    mig = sub.add_parser(
        "migrate",
        help="show the database's schema version, or move it (e.g. back, before a downgrade)",
    )
    mig.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    mig.add_argument("--to", help="the revision to move to: 'head' (newest) or one listed")
    bak = sub.add_parser("backup", help="copy the SQLite database, safely while it runs")
    bak.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    bak.add_argument("destination", type=Path, help="a new file for the copy")
    demo = sub.add_parser(
        "demo", help="a local homeserver, Switchboard and an advisor, ready to try"
    )
    demo.add_argument("--data-dir", type=Path, default=Path("demo-data"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["-g"]:  # the short form mautrix bridges use: `switchboard -g -c … -r …`
        argv[0] = "generate"
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            config = generate(args.config, args.registration)
            for note in config.notes:
                print(f"{'warning: ' if note.warning else ''}{note.text}")
            print(
                f"Wrote {args.config} and {args.registration} "
                f"(appservice id {config.appservice.id})."
            )
            print(
                "Add the registration to your homeserver's app_service_config_files, "
                "then restart the homeserver."
            )
        elif args.command in ("migrate", "backup"):
            return _maintain(args)
        elif args.command == "run":
            # until run() handles it, a SIGTERM (while loading) ends start-up as cleanly
            signal.signal(signal.SIGTERM, _stopped_early)
            return asyncio.run(run(args.config))
        else:
            from .demo import missing_demo_packages, run_demo

            missing = missing_demo_packages()
            if missing:
                print(
                    f"switchboard: the demo needs {' and '.join(missing)}, which a plain "
                    "install leaves out: pip install 'switchboard[demo]'",
                    file=sys.stderr,
                )
                return 2
            asyncio.run(run_demo(args.data_dir))
    except ConfigError as e:
        print(f"switchboard: {e}", file=sys.stderr)
        return 2
    except DatabaseInUse as e:
        print(f"switchboard: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
