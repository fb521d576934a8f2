"""Over-the-air model updates on the trap: download with resume, verify, install into the inactive
of two slots, self-test, switch between frames, watch the new model, and go back by itself."""
