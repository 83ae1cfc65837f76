"""``switchboard`` command: generate the registration, run, or start the local demo."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from . import logs
from .config import ConfigError, generate, load
from .db.lockfile import DatabaseInUse


async def wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run(config_path: Path) -> None:
    from .bootstrap import Switchboard

    config = load(config_path)  # upgraded in memory only: the file may be read-only
    logs.configure(config)
    logs.log_notes(config)
    switchboard = Switchboard(config)
    await switchboard.start()
    try:
        await wait_for_stop_signal()
    finally:
        await switchboard.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="fill in secrets and write the homeserver registration")
    gen.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
    gen.add_argument("-r", "--registration", type=Path, default=Path("registration.yaml"))
    run_p = sub.add_parser("run", help="run Switchboard next to your homeserver")
    run_p.add_argument("-c", "--config", type=Path, default=Path("config.yaml"))
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
        elif args.command == "run":
            asyncio.run(run(args.config))
        else:
            from .demo import run_demo

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
