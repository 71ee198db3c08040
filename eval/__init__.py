"""axmoe eval."""
