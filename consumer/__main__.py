"""`python -m consumer` is the `illustrator` command."""

import sys

from consumer.cli.main import main

sys.exit(main())
