"""Snapshots and checkpoints: the service, dirty bitmaps, guest quiesce, pure rules."""
