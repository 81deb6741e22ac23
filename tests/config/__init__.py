"""Tests of the settings modules."""
