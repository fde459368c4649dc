"""Compiled cores of agentos. Import the public modules, not these."""
