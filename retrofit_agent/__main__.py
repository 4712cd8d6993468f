"""`python -m retrofit_agent` is the `retrofit-agent` command."""

import sys

from retrofit_agent.cli import main

sys.exit(main())
