"""KVM Manager: a virtual machine manager for KVM/libvirt hosts."""

__version__ = "0.1.0"
