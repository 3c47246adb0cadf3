"""Eschaton."""
