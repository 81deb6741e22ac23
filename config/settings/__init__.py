"""Settings modules: base (shared), development, test and production."""
