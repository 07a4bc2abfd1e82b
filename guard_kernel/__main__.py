"""``python -m guard_kernel``: the command line (:mod:`guard_kernel.cli.main`)."""

import sys

from guard_kernel.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
