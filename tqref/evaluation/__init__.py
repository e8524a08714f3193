"""Measurements built on the reference (not part of the normative reference itself)."""
