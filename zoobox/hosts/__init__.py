"""What the orchestrating machine offers (container engine, NPUs, driver), and doctor."""
