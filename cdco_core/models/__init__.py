"""Encoders (the frozen base), adapters and heads."""
