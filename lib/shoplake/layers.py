"""Lambda layers: the rate detector's numpy + krcf layer (python3.12, x86_64), installed with pip from pyproject's pins.

Recipe (what :func:`build_rate_detector_layer` does, ``shoplake infra build-layer`` calls it):

1. ``pip install --target python/ --platform manylinux_2_28_x86_64 --python-version 3.12 --implementation cp --abi
   cp312 --only-binary=:all:`` of ``numpy==<pin> krcf==<pin>`` (pip resolves the dependencies, so the layer is
   complete or the build fails). Both are binary wheels built for the platform, nothing is compiled here: numpy's
   ``cp312-cp312-manylinux_2_27/2_28`` wheel (numpy ≥ 2.3 publishes none tagged ``manylinux2014``) and krcf's
   ``cp310-abi3-manylinux_2_28`` wheel (AWS's Rust random cut forest, one ``.so`` for every CPython ≥ 3.10). The
   platform is ``manylinux_2_28`` (pip accepts every older manylinux tag with it); Lambda's python3.12 runtime
   (Amazon Linux 2023, glibc 2.34) runs them;
2. a deterministic zip (sorted entries, fixed timestamps and modes, no ``__pycache__``/``bin/``/``direct_url.json``)
   plus a manifest of what is inside (``shoplake-layer.json`` in the zip and beside it).

krcf imports nothing outside the standard library on Python ≥ 3.11 (its stub's ``typing_extensions`` is for 3.10),
and neither package needs setuptools/``pkg_resources`` (the earlier ``rrcf`` layer had to ship setuptools 81 for
that). ``tests/aws/test_rate_detector_runtime.py`` imports the built layer in a clean python3.12 and scores with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

from shoplake.errors import ShoplakeError

RECIPE_VERSION = "3"  # bump when the recipe changes: it is part of the cache key
LAYER_NAME = "numpy-krcf"  # published as shoplake-<prefix>-numpy-krcf
PYTHON_VERSION = "3.12"  # infra.LAMBDA_RUNTIME is python3.12
PLATFORMS = {"x86_64": "manylinux_2_28_x86_64", "arm64": "manylinux_2_28_aarch64"}
LAYER_PACKAGES = ("numpy", "krcf")  # pinned in pyproject.toml
MANIFEST = "shoplake-layer.json"
MAX_DIRECT_UPLOAD_BYTES = 50 * 1024 * 1024  # publish_layer_version's ZipFile limit (larger layers go through S3)
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024  # Lambda's limit for a function and all its layers, unzipped
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeout|ReadTimeout|No route to host|"
    r"Could not fetch URL|connection broken",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(
    r"No matching distribution found for (\S+)|Could not find a version that satisfies the "
    r"requirement (\S+)"
)


class LayerError(ShoplakeError):
    """The layer cannot be built or published (no network, no wheel for the platform, a bad pin)."""


def layer_pins(pyproject: Path = PYPROJECT) -> dict[str, str]:
    """``{"numpy": "2.4.6", "krcf": "0.4.0"}``: pyproject's pins of the layer's packages."""
    try:
        deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise LayerError(f"cannot read the dependency pins from {pyproject}: {exc}") from None
    pins: dict[str, str] = {}
    for dep in deps:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([A-Za-z0-9_.+!-]+)\s*(;.*)?", dep)
        if match and match.group(1).lower() in LAYER_PACKAGES:
            pins[match.group(1).lower()] = match.group(2)
    missing = [p for p in LAYER_PACKAGES if p not in pins]
    if missing:
        raise LayerError(f"{pyproject} pins no exact version (name==x.y.z) of {', '.join(missing)}: pin it first")
    return pins


def layer_key(pins: dict[str, str], python_version: str = PYTHON_VERSION, architecture: str = "x86_64") -> str:
    """Short hash of everything that decides the layer's content (pins, runtime, platform, recipe)."""
    text = json.dumps([RECIPE_VERSION, python_version, PLATFORMS.get(architecture, architecture), sorted(pins.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def layer_zip_name(pins: dict[str, str], python_version: str = PYTHON_VERSION, architecture: str = "x86_64") -> str:
    tag = python_version.replace(".", "")
    return f"{LAYER_NAME}-py{tag}-{architecture}-{layer_key(pins, python_version, architecture)}.zip"


def build_rate_detector_layer(
    out_dir: Path,
    *,
    python_version: str = PYTHON_VERSION,
    architecture: str = "x86_64",
    pins: dict[str, str] | None = None,
    force: bool = False,
    timeout: float = 900.0,
) -> Path:
    """Build (or reuse) the numpy + krcf layer zip in ``out_dir``; returns its path (manifest beside it).

    The zip's name carries a hash of the pins, runtime and platform, so an existing zip with a matching manifest is
    reused (no download) unless ``force``. Errors are one-line :class:`LayerError` messages.
    """
    if architecture not in PLATFORMS:
        raise LayerError(f"architecture must be one of {sorted(PLATFORMS)} (Lambda's), got {architecture!r}")
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise LayerError(f"python_version must look like 3.12 (the Lambda runtime's), got {python_version!r}")
    pins = dict(pins or layer_pins())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / layer_zip_name(pins, python_version, architecture)
    if not force and _cached(target, pins):
        return target
    platform = PLATFORMS[architecture]
    with tempfile.TemporaryDirectory(prefix="shoplake-layer-") as tmp:
        work = Path(tmp)
        site = work / "layer" / "python"
        requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
        _pip(
            ["install", "--target", str(site), "--platform", platform, "--python-version", python_version]
            + ["--implementation", "cp", "--abi", "cp" + python_version.replace(".", ""), "--only-binary=:all:"]
            + ["--no-compile", "--no-warn-script-location", *requirements],
            f"install {' '.join(requirements)} for cp{python_version.replace('.', '')} {platform}",
            timeout,
            env={"PIP_CONSTRAINT": ""},
        )
        _tidy(site)
        manifest = _manifest(site, pins, python_version, architecture, platform)
        (work / "layer" / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        partial = target.with_suffix(".zip.partial")
        unzipped = _zip_dir(work / "layer", partial)
        if unzipped > MAX_UNZIPPED_BYTES:
            partial.unlink()
            raise LayerError(f"the layer unzips to {unzipped / 2**20:.0f} MiB, over Lambda's 250 MiB limit")
        manifest["zip_sha256"] = hashlib.sha256(partial.read_bytes()).hexdigest()
        manifest["zip_bytes"], manifest["unzipped_bytes"] = partial.stat().st_size, unzipped
        partial.replace(target)  # never a half-written zip under the final name
        _sidecar(target).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def _sidecar(zip_path: Path) -> Path:
    return zip_path.with_suffix(".json")


def read_manifest(zip_path: Path) -> dict[str, Any]:
    """The manifest written beside a built layer zip."""
    try:
        return json.loads(_sidecar(Path(zip_path)).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LayerError(f"{zip_path} has no readable manifest beside it ({exc}): rebuild the layer") from None


def _cached(target: Path, pins: dict[str, str]) -> bool:
    if not target.exists() or not _sidecar(target).exists():
        return False
    try:
        manifest = read_manifest(target)
    except LayerError:
        return False
    same = (
        manifest.get("packages") == pins
        and manifest.get("zip_sha256") == hashlib.sha256(target.read_bytes()).hexdigest()
    )
    return bool(same)


def _pip(args: list[str], what: str, timeout: float, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    full_env = {**os.environ, **(env or {})}
    if full_env.get("PIP_CONSTRAINT") == "":
        del full_env["PIP_CONSTRAINT"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)
    except subprocess.TimeoutExpired:
        raise LayerError(
            f"pip could not {what} within {timeout:.0f} s: check the network to the package index"
        ) from None
    if done.returncode == 0:
        return
    output = done.stderr + done.stdout
    if _NETWORK.search(output):
        raise LayerError(f"pip could not {what}: the package index is unreachable (no network?); connect and retry")
    found = _NOT_FOUND.search(output)
    if found and "(from versions: none)" in output:
        raise LayerError(
            f"pip could not {what}: the package index lists no version of {found.group(1) or found.group(2)} at all "
            "(no network, or PIP_INDEX_URL points at an index without it); connect and retry"
        )
    if found:
        raise LayerError(
            f"pip could not {what}: no distribution of {found.group(1) or found.group(2)} fits "
            "(wrong platform/Python version, or a pin that does not exist)"
        )
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    raise LayerError(f"pip could not {what}: {last}")


def _tidy(site: Path) -> None:
    """Drop what the runtime never uses and what would make the zip differ between builds."""
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with this machine's interpreter in the shebang
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    for direct in site.glob("*.dist-info/direct_url.json"):  # the local wheel's temporary path
        record = direct.parent / "RECORD"
        if record.exists():
            lines = [
                ln for ln in record.read_text().splitlines() if not ln.startswith(f"{direct.parent.name}/direct_url")
            ]
            record.write_text("\n".join(lines) + "\n")
        direct.unlink()


def _manifest(
    site: Path, pins: dict[str, str], python_version: str, architecture: str, platform: str
) -> dict[str, Any]:
    """What is inside, read back from the installed metadata; checks versions and the numpy wheel's tags."""
    installed: dict[str, str] = {}
    tags: dict[str, list[str]] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.M)
        version = re.search(r"^Version: (.+)$", meta, re.M)
        if not name or not version:
            continue
        key = name.group(1).strip().lower()
        installed[key] = version.group(1).strip()
        wheel = info / "WHEEL"
        tags[key] = re.findall(r"^Tag: (.+)$", wheel.read_text(), re.M) if wheel.exists() else []
    if installed != pins:
        raise LayerError(f"the layer holds {installed}, not the pins {pins}: a dependency crept in or a pin is wrong")
    abi = "cp" + python_version.replace(".", "")
    arch = platform.split("_", 3)[-1]
    if not any(t.startswith(f"{abi}-{abi}-") and t.endswith(arch) for t in tags["numpy"]):
        raise LayerError(f"numpy's wheel is tagged {tags['numpy']}, not {abi} on {arch}: wrong platform")
    if not any(t.split("-")[1] == "abi3" and t.endswith(arch) for t in tags["krcf"]):
        raise LayerError(f"krcf's wheel is tagged {tags['krcf']}, not abi3 on {arch}: wrong platform")
    return {
        "name": LAYER_NAME,
        "recipe": RECIPE_VERSION,
        "runtime": f"python{python_version}",
        "architecture": architecture,
        "platform": platform,
        "packages": installed,
        "wheel_tags": tags,
    }


def _zip_dir(root: Path, dest: Path) -> int:
    """A deterministic zip of ``root``'s tree (sorted names, fixed time); returns the unzipped size in bytes."""
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
    total = 0
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            data = path.read_bytes()
            total += len(data)
            archive.writestr(info, data, compresslevel=6)
    return total


def publish_layer(zip_path: Path, name: str | None = None) -> str:
    """Publish a built layer zip as a new layer version; returns its ARN (for ``SHOPLAKE_RATE_DETECTOR_LAYER``)."""
    from shoplake import config

    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise LayerError(f"{zip_path} does not exist: build it first with `shoplake infra build-layer`")
    manifest = read_manifest(zip_path)
    data = zip_path.read_bytes()
    if len(data) > MAX_DIRECT_UPLOAD_BYTES:
        raise LayerError(f"{zip_path} is {len(data) / 2**20:.0f} MiB, over the 50 MiB direct upload limit")
    packages = ", ".join(f"{k}=={v}" for k, v in sorted(manifest["packages"].items()))
    response = config.client("lambda").publish_layer_version(
        LayerName=name or config.resource_name(LAYER_NAME),
        Description=f"shoplake rate detector: {packages}"[:256],
        Content={"ZipFile": data},
        CompatibleRuntimes=[manifest["runtime"]],
        CompatibleArchitectures=[manifest["architecture"]],
    )
    return response["LayerVersionArn"]
