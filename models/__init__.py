"""axmoe models."""
