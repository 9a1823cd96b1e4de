"""radlab: pretrain radiology image encoders and benchmark them honestly."""

__version__ = "0.1.0"
