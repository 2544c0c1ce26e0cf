"""Entry point of an emulator process local_services starts: moto's server on a loopback port, request log silenced.

``--name`` says which one it is (``main``, or a dedicated one such as ``dynamodb``: see ``local_services.DEDICATED``);
every process runs the same moto with the same patches, and clients send each one only its own services' requests.
"""

import argparse
import logging

from moto.server import main as moto_main


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="main")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from shoplake import _moto_patches

    _moto_patches.apply()
    moto_main(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    run()
