"""The kvmm-e2e test guest: builder and in-guest files."""
