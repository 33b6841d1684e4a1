"""The manager's own database: what libvirt cannot hold (users, tokens, sessions, audit,
hosts, jobs)."""
