"""axmoe train."""
