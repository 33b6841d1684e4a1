"""Backups: what a user does to protect a VM's disks and get them back.

- policies.py: backup policies (what, when, how many to keep) and running them
  (BackupService, `manager.backups`); snapshot-method policies run here;
- images.py: backups made as images in a pool (BackupImageService,
  `manager.backups.images`): take, list, verify, restore, delete, retention;
- take.py: one backup with libvirt's backup API (full or incremental, checkpoints);
- copy_fallback.py: the same copy where libvirt has no backup API (a temporary
  external snapshot, then a block commit);
- restore.py: a backup image back as a new VM or over the VM's own disks;
- verify.py: reading a backup image back and checking it;
- retention.py: which backups a policy keeps;
- rules.py: pure rules (full or incremental, the disks to back up, the qcow2 header).

Imports run one way: policies -> images -> take/copy_fallback/restore/verify ->
rules/retention.
"""
