"""Hosts (libvirt connections), their URIs, and the doctor that checks them."""
