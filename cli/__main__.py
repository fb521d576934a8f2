"""`python -m trapline.cli ...` is the `trapline` command."""

import sys

from trapline.cli.main import main

sys.exit(main())
