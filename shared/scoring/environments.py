"""Deployment environments on a scoring host: built with uv once, reused, shared.

`EnvironmentCache.get(record)` returns a ready interpreter for a registered environment.
Each is built once per host into a content-addressed folder, `<root>/<key>/`, where `key`
hashes the environment's digest and the image it layers over, and reused by every job
and worker of every deployment with the same content. In Azure the first host to need it
builds it under a lease on a lock blob (so two replicas never build one twice) and packs
it, create-only, into the environments container; the others unpack that pack instead
of building. uv's wheel cache (`<root>/uv-cache`, or UV_CACHE_DIR) makes a rebuild mostly
a copy.

Layering: an environment for the image's own Python is a venv that sees the image's
packages below its own (a `.pth` file appends the image's site-packages), and uv is shown
the image's packages as installed (their metadata, copied in while uv works), so a
requirement the image already satisfies (torch with CUDA, say) is not installed again,
while a pin that differs always installs the pinned version, which then comes first. An
environment for another Python is standalone: a uv-managed interpreter where one can be
had, plus what the worker runtime needs to download inputs.

Environments are root's (the host's) and only readable by the deployments' own users.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, ContainerClient

from shared.contract import layout
from shared.contract.registry_records import EnvironmentRecord
from shared.contract.uv_settings import managed_pythons, uv_binary, uv_environment

log = logging.getLogger("batchfn.scoring")

READY_FILE = ".batchfn-environment.json"  # written last: the folder is complete
IMAGE_INSTALLER = "batchfn-image"  # INSTALLER of the image's metadata copied in for uv
IMAGE_PATH_FILE = "_batchfn_image.pth"
# Image packages that are builds of another package and satisfy a requirement of it.
IMAGE_ALIASES = {"tensorflow-cpu": "tensorflow", "tensorflow_cpu": "tensorflow"}
BUILD_SECONDS = 1800
LEASE_SECONDS = 60
LEASE_RENEW_SECONDS = 20
PACK_POLL_SECONDS = 1.0
# What the worker runtime itself imports to fetch inputs, added to standalone environments
# (layered ones see the image's).
RUNTIME_REQUIREMENTS = ("aiohttp>=3.8", "azure-core>=1.28", "requests>=2.28")
_UV_TAIL = 4000


class EnvironmentBuildError(RuntimeError):
    """An environment could not be built here (uv's message), or its Python had."""


@dataclass(frozen=True)
class BuiltEnvironment:
    """A ready environment: its content key, folder and interpreter."""

    key: str
    folder: Path
    python: str


def image_site_packages() -> tuple[str, ...]:
    """The site-packages folders of this host's interpreter: the image's packages."""
    return tuple(dict.fromkeys(
        os.path.abspath(p) for p in sys.path
        if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)))


def image_fingerprint(sites: tuple[str, ...]) -> str:
    """Identifies the image's interpreter and packages (an environment layers over them)."""
    digest = hashlib.sha256(f"{sys.version}\n{sys.platform}\n".encode())
    for site in sites:
        digest.update(f"{site}\n".encode())
        for entry in sorted(os.listdir(site)):
            if entry.endswith(".dist-info"):
                digest.update(f"{entry}\n".encode())
    return digest.hexdigest()


class EnvironmentCache:
    """Built environments under `root`; thread- and process-safe."""

    def __init__(self, root: Path, container: ContainerClient | None = None, *,
                 host_id: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._container = container
        self._container_ready = False
        self._host = host_id or uuid.uuid4().hex[:12]
        self._sites = image_site_packages()
        self._fingerprint = image_fingerprint(self._sites)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._ready: dict[str, BuiltEnvironment] = {}
        self._packing: threading.Thread | None = None

    @property
    def host_python(self) -> str:
        return f"{sys.version_info.major}.{sys.version_info.minor}"

    def key(self, record: EnvironmentRecord) -> str:
        """The content key of `record` built on this host's image."""
        python = record.spec.python or self.host_python
        base = self._fingerprint if python == self.host_python else f"python{python}"
        return hashlib.sha256(f"{record.digest}\n{base}".encode()).hexdigest()[:32]

    def get(self, record: EnvironmentRecord) -> BuiltEnvironment:
        """The ready environment of `record`: found, unpacked or built (EnvironmentBuildError)."""
        key = self.key(record)
        built = self._ready.get(key)
        if built is not None:
            return built
        with self._lock_for(key):
            built = self._ready.get(key) or self._find(key)
            if built is None:
                with _file_lock(self.root / f".{key}.lock"):
                    built = self._find(key) or self._obtain(record, key)
            self._ready[key] = built
            return built

    # ----- finding, unpacking, building ------------------------------------------------

    def _find(self, key: str) -> BuiltEnvironment | None:
        folder = self.root / key
        if not (folder / READY_FILE).is_file():
            return None
        return BuiltEnvironment(key, folder, str(folder / "bin" / "python"))

    def _obtain(self, record: EnvironmentRecord, key: str) -> BuiltEnvironment:
        if self._container is None:
            return self._build(record, key)
        self._ensure_container()
        lock = self._container.get_blob_client(layout.environment_build_lock(key))
        deadline = time.monotonic() + BUILD_SECONDS
        while time.monotonic() < deadline:
            if self._unpack(key):
                found = self._find(key)
                if found is not None:
                    return found
            lease = _try_lease(lock)
            if lease is not None:
                try:
                    if self._unpack(key):  # packed between our look and our lease
                        found = self._find(key)
                        if found is not None:
                            lease.release()
                            return found
                    with _renewing(lease):
                        built = self._build(record, key)
                except BaseException:
                    with contextlib.suppress(HttpResponseError):
                        lease.release()
                    raise
                # Packed while this host already scores with it; the lease is kept (and
                # renewed) until the pack is uploaded, so other hosts wait for it.
                self._packing = threading.Thread(
                    target=self._pack_and_release, args=(key, built.folder, lease),
                    name="batchfn-env-pack", daemon=True)
                self._packing.start()
                return built
            time.sleep(PACK_POLL_SECONDS)  # another host builds it: wait for its pack
        raise EnvironmentBuildError(f"environment {record.ref}: no host finished building it "
                                    f"within {BUILD_SECONDS}s")

    def _pack_and_release(self, key: str, folder: Path, lease: BlobLeaseClient) -> None:
        try:
            with _renewing(lease):
                self._pack(key, folder)
        except Exception:  # noqa: BLE001 - another host builds it again: only slower
            log.exception("environment %s could not be packed", key)
        finally:
            with contextlib.suppress(HttpResponseError):
                lease.release()

    def wait_packed(self, timeout: float | None = None) -> None:
        """Wait until the last environment this cache built is packed (benchmarks, tests)."""
        if self._packing is not None:
            self._packing.join(timeout)

    def _build(self, record: EnvironmentRecord, key: str) -> BuiltEnvironment:
        uv = uv_binary()
        if uv is None:
            raise EnvironmentBuildError("uv is not installed on this scoring host")
        started = time.monotonic()
        python = record.spec.python or self.host_python
        layered = python == self.host_python
        staging = self.root / f".build-{key}-{uuid.uuid4().hex[:8]}"
        home = Path(tempfile.mkdtemp(prefix="batchfn-uv-"))
        env = uv_environment(os.environ, {
            "HOME": str(home),
            "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR") or str(self._uv_cache()),
            "UV_PYTHON_DOWNLOADS": "automatic" if managed_pythons() else "never"})
        try:
            _uv(env, [uv, "venv", str(staging), "--relocatable", "--quiet", "--python",
                      sys.executable if layered else python], record)
            site = next(staging.glob("lib/python*/site-packages"))
            requirements = list(record.spec.requirements)
            if layered:
                _show_image_packages(site, self._sites)
            else:
                requirements += RUNTIME_REQUIREMENTS
            if requirements:
                listed = home / "requirements.txt"
                listed.write_text("\n".join(requirements) + "\n", encoding="utf-8")
                _uv(env, [uv, "pip", "install", "--quiet", "--python",
                          str(staging / "bin" / "python"), "-r", str(listed)], record)
            if layered:
                _hide_image_packages(site)
                (site / IMAGE_PATH_FILE).write_text("\n".join(self._sites) + "\n")
            _readable(staging)
            (staging / READY_FILE).write_text(json.dumps({
                "environment": record.ref, "digest": record.digest, "python": python,
                "layered": layered, "built_by": self._host,
                "seconds": round(time.monotonic() - started, 2)}))
            target = self.root / key
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / READY_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
        log.info("environment %s built in %.1fs (%s)", record.ref,
                 time.monotonic() - started, key)
        return BuiltEnvironment(key, self.root / key, str(self.root / key / "bin" / "python"))

    def _uv_cache(self) -> Path:
        """uv's wheel cache beside the environments: the host's alone (workers read the
        environments, not what they were built from)."""
        cache = self.root / "uv-cache"
        cache.mkdir(exist_ok=True)
        cache.chmod(0o700)
        return cache

    def _pack(self, key: str, folder: Path) -> None:
        """Upload the built folder as a compressed tar file, create-only (a pack is never
        replaced)."""
        assert self._container is not None
        started = time.monotonic()
        with tempfile.TemporaryFile() as file:
            compression = _write_pack(folder, file)  # its name is the key
            size = file.tell()
            file.seek(0)
            blob = self._container.get_blob_client(layout.environment_pack(key, compression))
            try:
                blob.upload_blob(file, overwrite=False, max_concurrency=4)
            except ResourceExistsError:
                pass  # a host that lost its lease packed it too: the same content
        log.info("environment %s packed (%.0f MB, %s) in %.1fs", key, size / 2**20,
                 compression, time.monotonic() - started)

    def _unpack(self, key: str) -> bool:
        """Unpack the environment's pack, if one exists that this host can read; True
        once unpacked here.

        The download streams into the decompression and the extraction, which run beside
        it, so an environment is ready about when its last byte arrives.
        """
        assert self._container is not None
        for compression in readable_compressions():
            blob = self._container.get_blob_client(layout.environment_pack(key, compression))
            try:
                download = blob.download_blob(max_concurrency=4)
            except ResourceNotFoundError:
                continue
            staging = self.root / f".unpack-{key}-{uuid.uuid4().hex[:8]}"
            try:
                staging.mkdir()
                _extract_pack(download.chunks(), compression, staging, key)
                os.rename(staging / key, self.root / key)
                return True
            except (OSError, tarfile.TarError, EnvironmentBuildError) as exc:
                if (self.root / key / READY_FILE).is_file():
                    return True  # another process of this host unpacked it first
                log.warning("environment %s: its pack could not be unpacked (%s)", key, exc)
                return False
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return False

    def _ensure_container(self) -> None:
        if self._container_ready:
            return
        assert self._container is not None
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        self._container_ready = True

    def _lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def worker_runtime(root: Path) -> Path:
    """A folder holding a copy of the worker runtime (`shared/worker`, and an empty
    `shared` package around it), for workers that run in a deployment's environment: they
    import it and nothing else of the engine. One copy per version of its sources."""
    source = Path(__file__).resolve().parent.parent / "worker"
    files = sorted(p for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(source)}\n".encode() + path.read_bytes())
    target = root / digest.hexdigest()[:16]
    if (target / "shared" / "worker" / "serve.py").is_file():
        return target
    staging = root / f".{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        for path in files:
            copy = staging / "shared" / "worker" / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy)
        (staging / "shared" / "__init__.py").write_text("")
        _readable(staging)
        root.chmod(0o755)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "shared" / "worker" / "serve.py").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _uv(env: dict[str, str], command: list[str], record: EnvironmentRecord) -> None:
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/",
                              stdin=subprocess.DEVNULL, timeout=BUILD_SECONDS)
    except subprocess.TimeoutExpired:
        raise EnvironmentBuildError(f"environment {record.ref}: uv took longer than "
                                    f"{BUILD_SECONDS}s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()[-_UV_TAIL:]
        raise EnvironmentBuildError(f"environment {record.ref} could not be built: {message}")


def _show_image_packages(site: Path, sites: tuple[str, ...]) -> None:
    """Copy the metadata of the image's packages into `site`, so that uv counts them as
    installed: it installs only what they do not satisfy (`_hide_image_packages` undoes it)."""
    for source in sites:
        for entry in os.listdir(source):
            metadata = Path(source, entry, "METADATA")
            if not entry.endswith(".dist-info") or not metadata.is_file():
                continue
            text = metadata.read_text(encoding="utf-8", errors="replace")
            name, _, rest = entry.partition("-")
            copies = [(entry, text)]
            if name in IMAGE_ALIASES:  # tensorflow-cpu satisfies `tensorflow`
                alias = IMAGE_ALIASES[name]
                copies.append((f"{alias}-{rest}", re.sub(
                    r"(?m)^Name: .*$", f"Name: {alias}", text, count=1)))
            for folder, content in copies:
                copy = site / folder
                if copy.exists():
                    continue
                copy.mkdir()
                (copy / "METADATA").write_text(content, encoding="utf-8")
                (copy / "INSTALLER").write_text(f"{IMAGE_INSTALLER}\n")
                (copy / "RECORD").write_text("".join(
                    f"{folder}/{item},,\n" for item in ("METADATA", "INSTALLER", "RECORD")))


def _hide_image_packages(site: Path) -> None:
    """Remove the image's metadata copies uv left (the packages it did not replace)."""
    for entry in site.glob("*.dist-info"):
        installer = entry / "INSTALLER"
        if installer.is_file() and installer.read_text().strip() == IMAGE_INSTALLER:
            shutil.rmtree(entry)


def _readable(folder: Path) -> None:
    """Every file readable, every folder passable by all; nothing writable but by root."""
    for path, _, files in os.walk(folder):
        os.chmod(path, 0o755)
        for name in files:
            item = os.path.join(path, name)
            if not os.path.islink(item):
                mode = os.stat(item).st_mode
                os.chmod(item, 0o755 if mode & 0o111 else 0o644)


def readable_compressions() -> list[str]:
    """The pack compressions this host can read, fastest first (gzip always: Python has it)."""
    return ["zst", "gz"] if shutil.which("zstd") else ["gz"]


def _write_pack(folder: Path, file: BinaryIO) -> str:
    """Write `folder` as a compressed tar file whose one top folder is its name; returns
    the compression. zstd where the host has it (it decompresses about three times faster
    than gzip: hosts that unpack it wait for it), else `gzip -1`, else Python's gzip."""
    tar = shutil.which("tar")
    compression, compressor = next(((name, [tool, *options]) for name, tool, options in (
        ("zst", shutil.which("zstd"), ["-1", "-q", "-T0"]),
        ("gz", shutil.which("gzip"), ["-1"])) if tool), ("gz", None))
    if tar is None or compressor is None:
        with tarfile.open(fileobj=file, mode="w:gz", compresslevel=1) as archive:
            archive.add(folder, arcname=folder.name)
        return "gz"
    # GNU tar into the compressor: a C pipeline on two cores instead of Python's one.
    with tempfile.TemporaryFile() as errors:  # a file: a full pipe would stall tar
        with subprocess.Popen([tar, "-C", str(folder.parent), "-cf", "-", folder.name],
                              stdout=subprocess.PIPE, stderr=errors) as archive, \
                subprocess.Popen(compressor, stdin=archive.stdout, stdout=file,
                                 stderr=errors) as compress:
            assert archive.stdout is not None
            archive.stdout.close()
            compress.wait()
        if archive.returncode or compress.returncode:
            raise OSError(f"packing {folder} failed: {_tail(errors)}")
    file.seek(0, os.SEEK_END)  # the compressor wrote through the descriptor
    return compression


def _extract_pack(chunks: Iterator[bytes], compression: str, staging: Path, key: str) -> None:
    """Extract a pack arriving as `chunks` into `staging`; only `staging/key` may appear."""
    tar = shutil.which("tar")
    decompressor = shutil.which("zstd" if compression == "zst" else "gzip")
    if tar is None or decompressor is None:
        if compression != "gz":
            raise EnvironmentBuildError(f"pack {key}: no {compression} decompressor here")
        with _ChunkReader(chunks) as stream, \
                tarfile.open(fileobj=stream, mode="r|gz") as archive:
            for member in archive:
                if not _inside(member, key):
                    raise EnvironmentBuildError(f"pack {key}: unexpected member {member.name}")
                archive.extract(member, staging, **_TAR_FILTER)
    else:
        # GNU tar refuses members with `..` and strips leading `/` on its own.
        with tempfile.TemporaryFile() as errors, subprocess.Popen(
                [decompressor, "-d", "-c", "-q"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=errors) as decompress, subprocess.Popen(
                [tar, "-xf", "-", "-C", str(staging), "--no-same-owner"],
                stdin=decompress.stdout, stderr=errors) as extract:
            assert decompress.stdin is not None and decompress.stdout is not None
            decompress.stdout.close()
            try:
                for chunk in chunks:
                    decompress.stdin.write(chunk)
            except BrokenPipeError:
                pass  # it ended early: its status and message say why
            finally:
                decompress.stdin.close()
            if decompress.wait() or extract.wait():
                raise EnvironmentBuildError(f"pack {key}: {_tail(errors)}")
    unexpected = [entry.name for entry in staging.iterdir() if entry.name != key]
    if unexpected or not (staging / key / READY_FILE).is_file():
        raise EnvironmentBuildError(f"pack {key} does not hold that environment alone")


def _tail(file: BinaryIO) -> str:
    """The end of what a tool wrote to `file`."""
    file.seek(0)
    return file.read().decode(errors="replace").strip()[-_UV_TAIL:]


# Python's own checks on extraction, where this Python has them (3.11.4 and later).
_TAR_FILTER = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}


class _ChunkReader(io.RawIOBase):
    """A file-like view of an iterator of byte chunks (a blob download's)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        while not self._rest:
            try:
                self._rest = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def _inside(member: tarfile.TarInfo, key: str) -> bool:
    parts = member.name.split("/")
    return parts[0] == key and ".." not in parts and not member.name.startswith("/") \
        and (member.isfile() or member.isdir() or member.issym())


def _try_lease(lock) -> BlobLeaseClient | None:  # noqa: ANN001 - a BlobClient
    with contextlib.suppress(ResourceExistsError):
        lock.upload_blob(b"", overwrite=False)
    try:
        return lock.acquire_lease(lease_duration=LEASE_SECONDS)
    except HttpResponseError:
        return None  # leased: another host builds it


@contextlib.contextmanager
def _renewing(lease: BlobLeaseClient) -> Iterator[None]:
    """Keep `lease` while the block runs (a build outlasts one lease period)."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(LEASE_RENEW_SECONDS):
            with contextlib.suppress(HttpResponseError):
                lease.renew()

    thread = threading.Thread(target=renew, name="batchfn-env-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One process of this host at a time (several host processes share the folder)."""
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
