"""`python -m retrofit_agent.distill` is the `retrofit-distill` command."""

import sys

from retrofit_agent.distill.cli import main

sys.exit(main())
