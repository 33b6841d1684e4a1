"""Users, login throttling, ownership of objects, and the audit log."""
