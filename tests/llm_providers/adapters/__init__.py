"""Tests of the provider adapters against loopback upstream servers."""
