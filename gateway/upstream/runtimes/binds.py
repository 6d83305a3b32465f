"""What a bubblewrap server sees of the host, and the bwrap command line that shows it.

A bwrap server sees, read-only, the system (``/usr``, ``/bin``, ``/lib*``, part of ``/etc``)
and what its own program needs to run:

- the program and every link and ``#!`` interpreter it goes through, each with its install
  prefix (``<prefix>/bin/x`` binds ``<prefix>``): a venv, a pyenv or nvm install, ``/usr/local``;
- a venv's base interpreter (``home`` in its ``pyvenv.cfg``) and the directories its
  ``site-packages/*.pth`` files add to ``sys.path`` (editable installs);
- the project directory of the program and of every script or directory named in the entry's
  own command (not in values filled from a sandbox's config): the nearest directory up from the
  script holding ``pyproject.toml``, ``setup.py``, ``package.json``, ``node_modules``, ``.venv``
  or ``uv.lock``, else the script's own directory; for a script inside ``node_modules`` the
  directory holding that ``node_modules``. A directory's ``.venv`` interpreter comes with it
  (``uv run --directory DIR``);
- the server's pulled install (``<data-dir>/servers/<name>``).

Never bound whole: ``/``, a top-level directory (``/home``, ``/tmp``, ``/opt``...), a user's
home directory or any directory above the gateway user's home: a script lying right inside one
is bound alone. The gateway's data dir is never visible: where a bound directory holds it, an
empty tmpfs covers it. The server's private home is its one writable directory, with a private
``/tmp``; directories of declared path parameters are added by the caller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Read-only in every bwrap sandbox. /etc only in part: what programs need to run, resolve names
# and verify TLS, not the host's configuration at large.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
    "/etc/timezone",
)
PROJECT_MARKERS = ("pyproject.toml", "setup.py", "package.json", "node_modules", ".venv", "uv.lock")


@dataclass(frozen=True, slots=True)
class Bind:
    """One host path shown to the server at the same path (``source`` resolved, ``path`` as named)."""

    path: Path
    source: Path
    writable: bool = False


def is_under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def too_broad(path: Path) -> bool:
    """``/``, a top-level directory, a home directory, or a directory above the gateway user's home."""
    if len(path.parts) <= 2 or path.parent == Path("/home"):
        return True
    home = Path.home()
    return path == home or path in home.parents


def _symlink_chain(path: Path) -> list[Path]:
    """``path`` and every link it goes through, up to the real file."""
    chain = [path]
    current = path
    for _ in range(40):
        if not current.is_symlink():
            break
        target = Path(os.readlink(current))
        current = target if target.is_absolute() else (current.parent / target)
        current = Path(os.path.normpath(current))
        chain.append(current)
    resolved = path.resolve()
    if resolved not in chain:
        chain.append(resolved)
    return chain


def _interpreter(path: Path, search_path: str) -> Path | None:
    """The program a script's ``#!`` line names (``/usr/bin/env node``: node found in PATH)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if not words:
        return None
    if Path(words[0]).name == "env":
        rest = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        found = shutil.which(rest[0], path=search_path) if rest else None
        return Path(found) if found else None
    return Path(words[0])


def _prefix(program: Path) -> Path:
    """What to bind for a program: its install prefix (``<prefix>/bin/x``), else its directory."""
    parent = program.parent
    prefix = parent.parent if parent.name in ("bin", "sbin") else parent
    return program if too_broad(prefix) else prefix


def project_dir(script: Path) -> Path | None:
    """The directory a script needs around it (see the module docstring); None: only the file."""
    parts = script.parts
    if "node_modules" in parts[:-1]:
        root = Path(*parts[: parts.index("node_modules")])
        return None if too_broad(root) else root
    start = script.parent
    for directory in (start, *start.parents):
        if too_broad(directory):
            break
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return None if too_broad(start) else start


def _venv_paths(prefix: Path) -> list[Path]:
    """A venv's base interpreter prefix and the directories its ``.pth`` files add."""
    found: list[Path] = []
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (prefix / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip().startswith("/"):
                home = Path(value.strip())
                found += [_prefix(hop / "python") for hop in {home, home.resolve()}]
    for pth in prefix.glob("lib/python*/site-packages/*.pth"):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in pth.read_text().splitlines():
                line = line.strip()
                if line.startswith("/") and os.path.isdir(line) and not too_broad(Path(line)):
                    found.append(Path(os.path.normpath(line)))
    return found


class _Needs:
    """Collects what a program needs, each program and directory looked at once."""

    def __init__(self, search_path: str, private: Sequence[Path]) -> None:
        self.search_path = search_path
        self.private = private  # the data dir: what lies there (a pulled install) is bound by itself
        self.found: list[Path] = []
        self.seen: set[Path] = set()

    def program(self, executable: Path) -> None:
        """Its prefixes, project and interpreters (recursively)."""
        pending = [executable]
        while pending:
            program = pending.pop()
            if program in self.seen or not program.is_absolute():
                continue
            self.seen.add(program)
            for hop in _symlink_chain(program):
                prefix = _prefix(hop)
                self.found.append(prefix)
                self.found += _venv_paths(prefix)
            resolved = program.resolve()
            if not is_under(resolved, [Path(d) for d in SYSTEM_DIRS]):
                self.script(resolved)
            interpreter = _interpreter(resolved, self.search_path)
            if interpreter is not None:
                pending.append(interpreter)

    def script(self, path: Path) -> None:
        """A script's project directory, else the script alone."""
        if is_under(path, self.private) or is_under(path.resolve(), self.private):
            return  # never walk up from the data dir into what holds it
        project = project_dir(path.resolve())
        if project is None:
            self.found.append(path)
        else:
            self.directory(project)

    def directory(self, directory: Path) -> None:
        """A directory, and its ``.venv`` interpreter (``uv run --directory DIR``)."""
        if directory in self.seen or too_broad(directory):
            return
        self.seen.add(directory)
        self.found.append(directory)
        venv_python = directory / ".venv" / "bin" / "python"
        if venv_python.exists():
            self.program(venv_python)


def _path_args(args: Iterable[str]) -> Iterable[Path]:
    """Absolute paths among arguments, also as ``--option=/path``."""
    for arg in args:
        value = arg.partition("=")[2] if arg.startswith("-") else arg
        if value.startswith("/") and len(value) < 4096:
            with contextlib.suppress(OSError, ValueError):
                if os.path.exists(value):
                    yield Path(os.path.normpath(value))


def command_paths(command: Sequence[str], literal_args: Iterable[str], search_path: str, data_dir: Path) -> list[Path]:
    """What the server of ``command`` needs read-only. ``literal_args``: the arguments the catalog
    entry wrote itself; values filled from a sandbox's config never add a path here."""
    head = command[0]
    executable = Path(head) if "/" in head else Path(shutil.which(head, path=search_path) or head)
    needs = _Needs(search_path, [data_dir, data_dir.resolve()])
    needs.program(executable)
    for path in _path_args(literal_args):
        if path.is_dir():
            needs.directory(path)
        else:
            needs.found.append(path)  # the file at the path named (it may be a link)
            needs.script(path)
    return needs.found


def bwrap_argv(
    command: list[str],
    env: Mapping[str, str],
    home: Path,
    *,
    read_only: Iterable[Path],
    data_dir: Path,
    install_dir: Path | None,
    binds: Sequence[Bind] = (),
    network: bool,
    bwrap: str = "bwrap",
) -> list[str]:
    """The bwrap command line for ``command``. Holds paths only: the environment is bwrap's own."""
    argv = [bwrap, "--unshare-all"]
    if network:
        argv.append("--share-net")
    argv += ["--die-with-parent", "--proc", "/proc", "--dev", "/dev"]
    system: list[Path] = []
    for directory in SYSTEM_DIRS:
        path = Path(directory)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), directory]
        elif path.is_dir():
            argv += ["--ro-bind", directory, directory]
            system.append(path)
    for item in ETC_PATHS:
        if os.path.exists(item):
            argv += ["--ro-bind", item, item]
    # A tmpfs of its own at /tmp, mounted before the binds below (the data dir may be in /tmp).
    argv += ["--tmpfs", "/tmp"]
    private = {data_dir, data_dir.resolve()}
    done: list[Path] = []
    for path in sorted(set(read_only), key=lambda p: len(p.parts)):
        if is_under(path, [*system, *done]) or is_under(path, private) or not path.exists():
            continue
        done.append(path)
        argv += ["--ro-bind", str(path), str(path)]
    # Where a bound directory holds the data dir (its keys, other sandboxes' homes), hide it.
    for path in sorted(private):
        if any(root in path.parents for root in [*system, *done]):
            argv += ["--tmpfs", str(path)]
    if install_dir is not None and install_dir.exists():
        argv += ["--ro-bind", str(install_dir), str(install_dir)]
    for bind in binds:
        argv += ["--bind" if bind.writable else "--ro-bind", str(bind.source), str(bind.path)]
    home.mkdir(parents=True, exist_ok=True)
    argv += ["--bind", str(home), str(home), "--remount-ro", "/", "--chdir", str(home), "--"]
    # bwrap sets PWD; the server's environment holds only what the gateway gave it.
    clean = shutil.which("env") or "/usr/bin/env"
    return [*argv, clean, "-u", "PWD", "--", *command]
