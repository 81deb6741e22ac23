"""Real HTTP servers on loopback that speak the providers' wire formats."""
