"""The fleet side: what receives the cameras' uploads. The device code never imports it."""
