"""`python -m cli`: the same as the `assetmint` command."""

import sys

from cli.main import main

sys.exit(main())
