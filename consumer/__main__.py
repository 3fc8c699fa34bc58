"""`python -m consumer` is the `illustrator` command."""

import sys

from consumer.cli import main

sys.exit(main())
