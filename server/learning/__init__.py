"""Learning from reviews: crop labels, the trap's memory of static false positives, retraining
with a not-worse gate."""
