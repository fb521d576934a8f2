"""Writing a plan of files idempotently: only what differs is written, with owner and mode.

A plan is a list of folders, files and links, each with its mode and owner. Applying it compares
every entry with what is there (bytes, mode, owner) and touches only what differs, so a second
run of `trapline provision` changes nothing; `--dry-run` prints the plan instead.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from trapline.files import atomic_write


@dataclass(frozen=True)
class Owner:
    user: str
    group: str

    def ids(self) -> tuple[int, int] | None:
        """(uid, gid) when both exist here and we may give files away (root); else None."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.user).pw_uid, grp.getgrnam(self.group).gr_gid
        except KeyError:
            return None


ROOT_OWNER = Owner("root", "root")


@dataclass(frozen=True)
class PlannedDir:
    path: Path  # absolute, as on the trap
    mode: int
    owner: Owner = ROOT_OWNER


@dataclass(frozen=True)
class PlannedFile:
    path: Path
    content: bytes
    mode: int
    owner: Owner = ROOT_OWNER
    secret: bool = False  # --dry-run shows its size, never its content


@dataclass(frozen=True)
class PlannedLink:
    path: Path
    target: str


Entry = PlannedDir | PlannedFile | PlannedLink


def on_root(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def _owner_differs(current: os.stat_result, owner: Owner) -> bool:
    ids = owner.ids()
    return ids is not None and (current.st_uid, current.st_gid) != ids


def _chown(path: Path, owner: Owner) -> None:
    ids = owner.ids()
    if ids is not None:
        os.chown(path, *ids, follow_symlinks=False)


def _set_mode_and_owner(target: Path, current: os.stat_result, mode: int, owner: Owner) -> bool:
    """Give an existing path its mode and owner; True when either had to change."""
    changed = False
    if stat.S_IMODE(current.st_mode) != mode:
        target.chmod(mode)
        changed = True
    if _owner_differs(current, owner):
        _chown(target, owner)
        changed = True
    return changed


def apply_entry(root: Path, entry: Entry) -> bool:
    """Make `entry` true under `root`; True when something changed."""
    target = on_root(root, entry.path)
    if isinstance(entry, PlannedLink):
        if target.is_symlink() and os.readlink(target) == entry.target:
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        target.symlink_to(entry.target)
        return True
    try:
        current = target.lstat()
    except FileNotFoundError:
        current = None
    if isinstance(entry, PlannedDir):
        created = current is None
        target.mkdir(parents=True, exist_ok=True)
        return _set_mode_and_owner(target, target.lstat(), entry.mode, entry.owner) or created
    same_bytes = (
        current is not None and stat.S_ISREG(current.st_mode) and target.read_bytes() == entry.content
    )
    if same_bytes and current is not None:
        return _set_mode_and_owner(target, current, entry.mode, entry.owner)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, entry.content, entry.mode)
    _chown(target, entry.owner)
    return True


def describe(entry: Entry) -> str:
    """One line for --dry-run and the change list."""
    if isinstance(entry, PlannedLink):
        return f"link  {entry.path} -> {entry.target}"
    owner = f"{entry.owner.user}:{entry.owner.group}"
    if isinstance(entry, PlannedDir):
        return f"dir   {entry.path}  {entry.mode:04o} {owner}"
    size = f"{len(entry.content)} bytes" + (", secret" if entry.secret else "")
    return f"file  {entry.path}  {entry.mode:04o} {owner}  ({size})"
