"""Cloud-init NoCloud seeds: building them, password hashing, telling a seed volume apart."""
