"""The simulator: replay a load trace through the real decision code."""
