"""The controller: the scale sequence every caller uses (and, later, the loop around it)."""
