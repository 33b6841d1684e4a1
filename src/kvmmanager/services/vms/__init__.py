"""Virtual machines: create (spec, builder, OS choice from osinfo-db, ISO detection, name
check), list, edit, pending next-boot values, delete, keys, host devices, SPICE, NIC detach,
addresses.
"""
