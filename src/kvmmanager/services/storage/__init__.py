"""Storage pools and volumes: the service, calls on a host's worker, pool/volume XML, specs,
volume clone, upload/download streams, image probing.
"""
