"""Writes a login record to /var/run/utmp so "logged-in users" (our agent's get_users,
qemu-ga's guest-get-users) have a real session to report; nothing else in this guest
logs anyone in."""

import os
import struct
import sys
import time

USER_PROCESS = 7
# glibc x86_64 struct utmp: type, pid, line[32], id[4], user[32], host[256],
# exit(2 x short), session, tv_sec, tv_usec, addr_v6[4 x int32], unused[20].
_FMT = "hi32s4s32s256shhiii4i20s"


def main(user: str, tty: str) -> None:
    now = time.time()
    record = struct.pack(
        _FMT,
        USER_PROCESS,
        os.getpid(),
        tty.encode(),
        tty[-4:].encode(),
        user.encode(),
        b"",
        0,
        0,
        0,
        int(now),
        int((now % 1) * 1e6),
        0,
        0,
        0,
        0,
        b"",
    )
    assert len(record) == 384
    with open("/var/run/utmp", "ab") as f:
        f.write(record)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
