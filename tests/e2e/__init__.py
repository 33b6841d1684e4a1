"""Real-VM end-to-end suite (issue 5)."""
