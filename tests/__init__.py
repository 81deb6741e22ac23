"""The test suite: one folder per app, mirroring the code; loopback upstreams in tests/upstreams."""
