"""`python -m unsupjax` is the `unsupjax` command."""

import sys

from unsupjax.cli import main

sys.exit(main())
