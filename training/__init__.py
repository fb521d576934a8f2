"""Dataset preparation, YOLOv8 fine-tuning and evaluation (workstation / server side)."""
