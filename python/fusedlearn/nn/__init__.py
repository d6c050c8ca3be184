"""Neural-network building blocks (parameters now; modules and layers come later)."""
from .parameter import Parameter

__all__ = ["Parameter"]
