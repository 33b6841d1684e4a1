"""Virtual networks and port forwards (passt user-mode networking)."""
