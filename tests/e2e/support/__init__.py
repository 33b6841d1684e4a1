"""Helpers of the real-VM suite: REST client, event watcher, console capture, guests."""
