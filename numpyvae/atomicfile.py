"""Write a file so that readers see the old file or the whole new one, never a part of it."""
from __future__ import annotations

import contextlib
import os
import secrets


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
    temp_path = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        try:
            file = open(temp_path, "xb")  # "x": never clobber another writer's temporary file
            with file:
                yield file
                file.flush()
                os.fsync(file.fileno())  # a rename can reach the disk before the data does; not this one
            if check is not None:
                check(temp_path)
            os.replace(temp_path, path)
        except OSError as error:
            # name the file the caller asked for, not the hidden temporary one
            raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
