"""Write a file so that readers see the old file or the whole new one, never a part of it."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time

TOKEN_BYTES = 6       # the random part of a temporary file's name: 12 hex digits
ABANDONED_SECONDS = 600   # a temporary file nobody wrote to for this long lost its writer (a PNG takes < 1 s)
NAME_MAX = 255        # bytes in one file name on the usual file systems (ext4, XFS, APFS, NTFS)


def _temp_stem(name):
    """What a temporary file for `name` is called after its dot: `name` itself, or, where `.NAME.RANDOM.tmp`
    would be too long a file name, a digest of it (so a valid 254-byte name can still be written)."""
    if len(os.fsencode(f".{name}.{'0' * 2 * TOKEN_BYTES}.tmp")) <= NAME_MAX:
        return name
    return hashlib.sha256(os.fsencode(name)).hexdigest()[:32]


def _naming(error, temp_path, path):
    """`error` with the hidden temporary file's name replaced by the target's in its message."""
    error.args = tuple(arg.replace(temp_path, path) if isinstance(arg, str) else arg for arg in error.args)
    return error


@contextlib.contextmanager
def atomic_write(path, check=None):
    """Yield a binary file to write; when the block ends without error, it becomes `path`.

    The file is a temporary one beside `path` (os.replace is atomic only within one file
    system) with a hidden name, `.NAME.RANDOM.tmp`, that no loader looks for. After the block:
    the file is flushed to disk, then `check(temp_path)` runs if given (e.g. verify a
    checksum; raise to reject), then it replaces `path`. If anything raises, KeyboardInterrupt
    included, the temporary file is removed and whatever was at `path` is left untouched.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp_path = os.path.join(directory, f".{_temp_stem(name)}.{secrets.token_hex(TOKEN_BYTES)}.tmp")
    try:
        try:
            file = open(temp_path, "xb")  # "x": never clobber another writer's temporary file
            with file:
                yield file
                file.flush()
                os.fsync(file.fileno())  # a rename can reach the disk before the data does; not this one
            if check is not None:
                try:
                    check(temp_path)
                except Exception as error:     # its message names the file the caller asked for
                    raise _naming(error, temp_path, path)
            os.replace(temp_path, path)
        except OSError as error:
            # name the file the caller asked for, not the hidden temporary one
            if error.errno is None:            # e.g. NumPy's "78400 requested and 468 written"
                raise OSError(f"cannot write {path} ({str(error).replace(temp_path, path)})") from None
            raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise


def temp_name_pattern(name):
    """The names atomic_write gives its temporary files for `name`, as a compiled regex."""
    return re.compile(rf"\.{re.escape(_temp_stem(name))}\.[0-9a-f]{{{2 * TOKEN_BYTES}}}\.tmp")


def remove_stale_temp_files(directory, names):
    """Remove the temporary files that writes of `names` in `directory` left when killed; return their names.

    A write killed outright (kill -9, power cut) cannot remove its temporary file. Only a caller
    that knows no write is under way in `directory` may call this (train does, holding the run's lock).
    """
    patterns = [temp_name_pattern(name) for name in names]
    removed = []
    for entry in os.scandir(directory):
        if any(p.fullmatch(entry.name) for p in patterns) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
            except OSError as error:     # a read-only folder: say so of the folder, not of a hidden file in it
                raise OSError(error.errno, f"cannot write in {directory}: {error.strerror}") from None
    return removed


def remove_abandoned_temp_files(directory, suffix, min_age=ABANDONED_SECONDS):
    """Remove the temporary files that killed writes of `*suffix` files left in `directory`; return their names.

    suffix: ".png" for every PNG, or a whole file name for that file's alone.

    For folders no lock guards (figures, generate's output): another process may be writing there
    right now, so only a temporary file untouched for `min_age` seconds is taken to have lost its
    writer. (Were one still alive, its rename would fail with a one-line error; no finished file is touched.)
    """
    pattern = re.compile(rf"\..*{re.escape(suffix)}\.[0-9a-f]{{{2 * TOKEN_BYTES}}}\.tmp")
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:            # no folder yet: nothing left behind
        return removed
    now = time.time()
    for entry in entries:
        try:
            if (pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
                    and now - entry.stat(follow_symlinks=False).st_mtime >= min_age):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass               # gone meanwhile, or not ours to remove
    return removed
