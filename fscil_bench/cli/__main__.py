"""``python -m fscil_bench.cli`` (as ``torchrun`` launches it): the ``fscil-bench`` command."""

import sys

from fscil_bench.cli import main

sys.exit(main())
