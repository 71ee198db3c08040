"""axmoe passes."""
