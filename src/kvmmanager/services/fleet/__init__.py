"""Several manager instances on one database: registration, the singleton lease, shared events."""
