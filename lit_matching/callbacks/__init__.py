"""Reporting callbacks (e.g. the recommendation table of a test run)."""
