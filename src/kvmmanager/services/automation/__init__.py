"""Schedules, the scheduler that runs them, and batch actions on many VMs."""
