"""`python -m devhost --app function_app`: run a Python v2-model function app locally."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from devhost.azurite import Azurite, AzuriteError
from devhost.config import ConfigError, HostConfig, load_local_settings
from devhost.connections import DEFAULT_CONNECTION
from devhost.host import DevHost, ServeError, load_app

log = logging.getLogger("devhost")
_DEVELOPMENT_PORTS = (10000, 10001, 10002)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="devhost", description=__doc__)
    parser.add_argument("--app", default="function_app",
                        help="module that defines the FunctionApp (default: function_app)")
    parser.add_argument("--script-root", type=Path, default=Path.cwd(),
                        help="folder with host.json and the app (default: the current one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7071, help="port to listen on")
    parser.add_argument("--shutdown-grace", type=float, default=20.0,
                        help="seconds running invocations get to finish at shutdown")
    return parser.parse_args(argv)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _storage(script_root: Path) -> Azurite | None:
    """Make sure AzureWebJobsStorage points at a storage account; start Azurite if needed."""
    configured = os.environ.get(DEFAULT_CONNECTION, "").strip()
    development = configured.replace(" ", "").lower() == "usedevelopmentstorage=true"
    if configured and not development:
        return None
    if development and all(_listening(port) for port in _DEVELOPMENT_PORTS[:2]):
        return None
    ports = _DEVELOPMENT_PORTS if development else (0, 0, 0)
    azurite = Azurite(location=script_root / ".azurite", blob_port=ports[0],
                      queue_port=ports[1], table_port=ports[2]).start()
    os.environ[DEFAULT_CONNECTION] = azurite.connection_string
    log.info("started Azurite (data in %s)", azurite.location)
    return azurite


async def _serve(args: argparse.Namespace, script_root: Path) -> None:

    host = DevHost(
        load_app(args.app),
        config=HostConfig.load(script_root / "host.json"),
        connection_string=os.environ[DEFAULT_CONNECTION],
        script_root=script_root, host=args.host, port=args.port,
        shutdown_grace=args.shutdown_grace,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await host.run(stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if host.invoker.active:
        # Threads cannot be stopped; the real host ends the worker process the same way.
        log.warning("%d invocation(s) still running after the grace period; exiting",
                    host.invoker.active)
        logging.shutdown()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    script_root = args.script_root.resolve()
    os.chdir(script_root)
    sys.path.insert(0, str(script_root))
    azurite = None
    try:
        load_local_settings(script_root / "local.settings.json")
        azurite = _storage(script_root)
        asyncio.run(_serve(args, script_root))
    except (ConfigError, AzuriteError) as exc:
        log.error("%s", exc)
        return 2
    except ServeError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if azurite is not None:
            azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
