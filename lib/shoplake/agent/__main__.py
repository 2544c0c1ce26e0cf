"""``python -m shoplake.agent run|status|stop``: the agent CLI without the ``shoplake`` entry point."""

import sys

from shoplake.agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
