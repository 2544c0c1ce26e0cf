"""Entry point of the emulator process local_services starts: moto's server on a loopback port, request log silenced."""

import argparse
import logging

from moto.server import main as moto_main


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from shoplake import _moto_patches

    _moto_patches.apply()
    moto_main(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    run()
