"""Provider adapters, one per wire protocol, behind one base class and one registry."""
