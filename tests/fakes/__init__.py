"""Fakes of external systems that speak real protocols on loopback (no mocks of our own code)."""
