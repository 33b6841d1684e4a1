"""Jobs and their progress, and the undo of what a killed job half made."""
