"""aedistill: knowledge distillation for bottom-up Associative Embedding pose estimation."""

__version__ = "0.1.0"
