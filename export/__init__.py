"""axmoe export."""
