"""What is kept of the frames: the keep policy (change, heartbeat, novelty) and label events."""
