"""`retrofit-agent run` under systemd: lifecycle and signals (daemon), the camera watchdog
(supervisor), the notify protocol (sdnotify) and Prometheus metrics."""
