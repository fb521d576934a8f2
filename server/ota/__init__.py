"""Over-the-air model updates, the server's side: releases, staged rollouts, the commands that
carry each trap's desired release, and what the traps report back."""
