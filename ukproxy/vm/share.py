"""A host folder shared with VMs over virtio-9p: QEMU's arguments for it, and whether QEMU may use it.

QEMU opens the folder while it is still root and then drops to the workers' user (`-runas`); from
then on every file the guest opens is opened by that user, relative to the folder. So that user
must be able to list and search the folder (and write to it, for a writable share); the folders
above it do not matter.
"""

from __future__ import annotations

import os
import pwd
import stat

DEFAULT_SHARE_TAG = "share"  # the mount tag the guest services look for without share_tag=
READ = stat.S_IROTH | stat.S_IXOTH  # list the folder and open what is in it
WRITE = stat.S_IWOTH | stat.S_IXOTH  # create, rename and remove files in it


def fsdev_args(fsdev_id: str, folder: str, tag: str, writable: bool,
               device: str = "virtio-9p-pci,disable-modern=on") -> list[str]:
    """-fsdev and -device for one share. security_model=none: files keep the host's owners and modes,
    which QEMU (unprivileged) cannot change anyway. The guest drives legacy virtio only."""
    options = f"local,id={fsdev_id},path={_qemu_escape(folder)},security_model=none"
    if not writable:
        options += ",readonly=on"
    return ["-fsdev", options, "-device", f"{device},fsdev={fsdev_id},mount_tag={tag}"]


def _qemu_escape(value: str) -> str:
    return value.replace(",", ",,")  # QEMU's option syntax: a comma in a value is doubled


def access_problem(folder: str, user: str | None, writable: bool) -> str | None:
    """Why `user` (None: this process) cannot use `folder` as a share, or None when it can."""
    try:
        info = os.stat(folder)
    except OSError as e:
        return f"cannot stat {folder}: {e.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder"
    need = WRITE | READ if writable else READ
    wanted = "read and write" if writable else "read"
    if user is None:
        mode = os.R_OK | os.X_OK | (os.W_OK if writable else 0)
        if not os.access(folder, mode):
            return f"ukproxy (uid {os.geteuid()}) cannot {wanted} {folder}"
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None  # an unknown user is reported where workers drop to it (ukproxy.privileges)
    if entry.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    if info.st_uid == entry.pw_uid:
        granted = (info.st_mode >> 6) & 0o7
    elif info.st_gid in groups:
        granted = (info.st_mode >> 3) & 0o7
    else:
        granted = info.st_mode & 0o7
    if granted & need != need:
        return (f"QEMU runs as user {user!r}, who cannot {wanted} {folder} "
                f"(mode {stat.filemode(info.st_mode)}, owner uid {info.st_uid}, gid {info.st_gid})")
    return None
