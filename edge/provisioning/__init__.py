"""Provisioning a trap: `trapline provision` (command.py) writes the plan (plan.py) idempotently
(files.py). Runs on the Pi; imports nothing of the server."""
