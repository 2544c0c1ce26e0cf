"""shoplake: an e-commerce data platform on AWS services, runnable locally on an embedded AWS emulator."""

from shoplake.errors import ShoplakeError

__all__ = ["ShoplakeError"]
__version__ = "0.1.0"
