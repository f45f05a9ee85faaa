"""HunyuanVideo inference, rebuilt: loads the official checkpoints unchanged."""

__version__ = "0.1.0"
