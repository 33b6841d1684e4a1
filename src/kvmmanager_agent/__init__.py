"""KVM Manager guest agent: JSON-RPC 2.0 over virtio-serial, Python 3.8+ stdlib only."""

__version__ = "0.1.0"
