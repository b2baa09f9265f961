"""GoBGP's gRPC API for Python, generated from the .proto files of the installed GoBGP.

No maintained PyPI package ships stubs for GoBGP 3.x (gobgp-client stopped at 0.0.3 in 2020,
for the 2.x API), and hand-written protobuf code is not an option.  Debian ships GoBGP's
protos with the daemon's source (golang-github-osrg-gobgp-dev, the same 3.10.0 source package
as gobgpd), so the stubs are generated once by grpcio-tools' protoc from exactly the API the
installed daemon speaks, into a cache directory named by the protos' and protoc's hash, and
imported from there.  A changed GoBGP (new protos) gets new stubs; a read-only cache falls
back to a private temporary directory.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PROTO_DIR = Path("/usr/share/gocode/src/github.com/osrg/gobgp/api")
PROTOS = ("gobgp.proto", "attribute.proto", "capability.proto")
CACHE_DIR = Path(os.environ.get("VARPD_CACHE_DIR", "/var/cache/varpd"))

_lock = threading.Lock()
_loaded: "GobgpApi | None" = None


class ApiUnavailable(RuntimeError):
    """The stubs cannot be had: protos or grpcio-tools missing, protoc failed."""


@dataclass(frozen=True)
class GobgpApi:
    pb: ModuleType  # gobgp_pb2: requests, Path, Peer, Family...
    attrs: ModuleType  # attribute_pb2: NLRIs, path attributes, extended communities
    grpc: ModuleType  # gobgp_pb2_grpc: GobgpApiStub
    directory: Path


def missing_reason(proto_dir: Path = PROTO_DIR) -> str | None:
    """Why the stubs cannot be generated here, or None."""
    lost = [p for p in PROTOS if not (proto_dir / p).is_file()]
    if lost:
        return (f"GoBGP's API protos are not in {proto_dir} ({', '.join(lost)}): "
                "install Debian's golang-github-osrg-gobgp-dev")
    for mod in ("grpc", "grpc_tools"):
        try:
            importlib.import_module(mod)
        except ImportError:
            return f"python module {mod} is missing: pip install 'varpd[evpn]'"
    return None


def _digest(proto_dir: Path) -> str:
    import grpc_tools

    h = hashlib.sha256(getattr(grpc_tools, "__version__", "").encode())
    for name in PROTOS:
        h.update((proto_dir / name).read_bytes())
    return h.hexdigest()[:16]


def _generate(proto_dir: Path, out: Path) -> None:
    import grpc_tools

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=out.parent))
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"-I{includes}",
           f"--python_out={tmp}", f"--grpc_python_out={tmp}", *PROTOS]
    done = subprocess.run(cmd, cwd=proto_dir, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ApiUnavailable(f"protoc failed on {proto_dir}: {done.stderr.strip()[:500]}")
    try:
        tmp.rename(out)  # atomic: a concurrent generator's result is as good as ours
    except OSError:
        if not out.is_dir():
            raise


def load(proto_dir: Path = PROTO_DIR, cache_dir: Path | None = None) -> GobgpApi:
    """The generated modules (generating them on first use); ApiUnavailable when they cannot be had."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        reason = missing_reason(proto_dir)
        if reason:
            raise ApiUnavailable(reason)
        name = f"gobgp-api-{_digest(proto_dir)}"
        out = None
        for base in (cache_dir or CACHE_DIR, Path(tempfile.gettempdir()) / f"varpd-{os.getuid()}"):
            try:
                base.mkdir(parents=True, exist_ok=True, mode=0o755)
                out = base / name
                if not (out / "gobgp_pb2_grpc.py").is_file():
                    _generate(proto_dir, out)
                break
            except OSError:
                out = None
        if out is None:
            raise ApiUnavailable("no writable directory for GoBGP's generated API stubs")
        # the generated modules import each other by top-level name (attribute_pb2 imports gobgp_pb2)
        sys.path.insert(0, str(out))
        try:
            pb = importlib.import_module("gobgp_pb2")
            attrs = importlib.import_module("attribute_pb2")
            importlib.import_module("capability_pb2")
            stubs = importlib.import_module("gobgp_pb2_grpc")
        finally:
            sys.path.remove(str(out))
        _loaded = GobgpApi(pb, attrs, stubs, out)
        return _loaded
