"""Entry point of the emulator process the stack starts: moto's server on a loopback port, request log silenced."""

import argparse
import logging

from moto.server import main as moto_main


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto caps Firehose at 50 delivery streams per region; AWS's quota in us-east-1 is 5,000. Parallel test
    # sessions (one resource prefix each) share this emulator, so use the real quota.
    from moto.firehose.models import DeliveryStream

    DeliveryStream.MAX_STREAMS_PER_REGION = 5000
    moto_main(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    run()
