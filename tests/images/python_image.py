"""Build a small local container image that runs the fixture MCP server, with no registry.

The image is a root filesystem made from the host's own Python: the interpreter, the shared
libraries it links (found with ``ldd``), its standard library (without tests, tkinter, idle,
ensurepip and site-packages) and ``tests/fixtures/fixture_server.py`` at ``/srv``. It is
imported with ``<engine> import`` (no Dockerfile, no base image, no network) and tagged with
a hash of what went in, so a second build is a no-op.

    python tests/images/python_image.py podman    # prints the image reference
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "fixture_server.py"
IMAGE_NAME = "localhost/mcp-gateway-test/fixture-python"
SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "lib2to3"}


def _shared_libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    found: list[Path] = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            found.append(Path(parts[2]))
        elif parts and parts[0].startswith("/"):
            found.append(Path(parts[0]))  # the dynamic loader
    return found


def _stdlib_files(stdlib: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith("config-")]
        files.extend(Path(root) / n for n in names if not n.endswith((".opt-1.pyc", ".opt-2.pyc")))
    return files


def rootfs_members() -> dict[str, Path]:
    """Path in the image -> file on the host."""
    python = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    members: dict[str, Path] = {"/usr/local/bin/python3": python}
    libs = set(_shared_libraries(python))
    dynload = stdlib / "lib-dynload"
    for so in dynload.glob("*.so"):
        libs.update(_shared_libraries(so))
    for lib in libs:
        members[str(lib)] = lib.resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for path in _stdlib_files(stdlib):
        members[f"/usr/local/lib/{version}/{path.relative_to(stdlib)}"] = path
    members["/srv/fixture_server.py"] = FIXTURE
    return members


def build_tar(members: dict[str, Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("/tmp", "/root", "/etc"):
            info = tarfile.TarInfo(directory.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "/tmp" else 0o755
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode = len(passwd), 0o644
        tar.addfile(info, io.BytesIO(passwd))
        for target, source in sorted(members.items()):
            tar.add(str(source), arcname=target.lstrip("/"), recursive=False)
    return buffer.getvalue()


def content_hash(members: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for target, source in sorted(members.items()):
        stat = source.stat()
        digest.update(f"{target}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(FIXTURE.read_bytes())
    digest.update("\n".join(CHANGES).encode())
    return digest.hexdigest()[:16]


def image_exists(engine: str, reference: str) -> bool:
    result = subprocess.run([engine, "image", "inspect", reference], capture_output=True, timeout=60)
    return result.returncode == 0


CHANGES = (
    'CMD ["/usr/local/bin/python3", "/srv/fixture_server.py"]',
    "ENV PATH=/usr/local/bin:/usr/bin:/bin",
    "ENV IMAGE_VAR=from-image",
)


def build(engine: str) -> str:
    """Build (or find) the image; return its reference."""
    members = rootfs_members()
    reference = f"{IMAGE_NAME}:{content_hash(members)}"
    if image_exists(engine, reference):
        return reference
    data = build_tar(members)
    changes = [arg for change in CHANGES for arg in ("--change", change)]
    subprocess.run(
        [engine, "import", *changes, "-", reference], input=data, capture_output=True, check=True, timeout=300
    )
    return reference


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "podman"))
