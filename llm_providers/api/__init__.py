"""The HTTP API of provider configs and service keys, and what every API view shares."""
