"""`python -m retrofit_agent.fleet`: the same as `retrofit-fleet`."""

import sys

from retrofit_agent.fleet.cli import main

sys.exit(main())
