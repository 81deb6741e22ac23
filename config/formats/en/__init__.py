"""English date formats of the admin (see formats.py)."""
