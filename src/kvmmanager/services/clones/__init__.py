"""Cloning VMs, and the sweep that merges back a dead clone's temporary snapshots."""
