"""The wheels benchmarks/gpu_check.py needs on a GPU machine without network: python benchmarks/gpu_check_wheels.py DIR

Downloads, built for the GPU image's Python (CPython 3.12, x86-64 Linux), crs's tested versions
(``constraints.txt``) of the packages that image lacks (trl, datasets and theirs) or holds at another version
(transformers, accelerate, peft), bitsandbytes cut down to its CUDA 13 libraries (the image's torch is built for
CUDA 13; the whole wheel is 43 MB), and DeepSpeed's source with what it needs (no wheel of it is published: the
device command builds it there against the image's torch). Prints each file's size and the total, which must
leave room for the work tree under the 64 MiB that travels with it. docs/gpu_check.md has the device command.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# At crs's tested versions: what the image lacks, and what it holds at versions crs was not tested with.
PINNED = ("transformers", "accelerate", "peft", "trl", "datasets", "dill", "multiprocess", "bitsandbytes")
# DeepSpeed's needs that the image lacks, at the versions constraints.txt pins (pydantic's, for the ZeRO checks).
PINNED_FOR_DEEPSPEED = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions")
UNPINNED_FOR_DEEPSPEED = ("hjson==3.1.0",)  # not a crs dependency: pinned here
DEEPSPEED_SOURCE = "deepspeed==0.19.8"
TARGET = [
    *("--python-version", "3.12", "--implementation", "cp"),
    *(f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28)),
    *("--platform=manylinux2014_x86_64", "--platform=manylinux1_x86_64"),
]
KEPT_LIBRARIES = re.compile(r"libbitsandbytes_(cpu|cuda13\d+)\.so$")  # the image's torch: CUDA 13
TRAVEL_LIMIT = 64 * 2**20
WORK_TREE_ROOM = 8 * 2**20  # the repository itself travels too


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_versions(constraints: Path, names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each of ``names`` as ``constraints`` pins it; a name it does not pin stops the run."""
    pins = {}
    for line in constraints.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[normalized(name.strip())] = version.strip()
    missing = [name for name in names if normalized(name) not in pins]
    if missing:
        raise SystemExit(f"error: {constraints} pins no version of {', '.join(missing)}")
    return [f"{name}=={pins[normalized(name)]}" for name in names]


def download(requirements: list[str], folder: Path, wheels: bool) -> None:
    """``pip download`` of ``requirements`` alone (no dependencies) into ``folder``: wheels for the GPU image's
    Python and platform, or source archives."""
    kind = ["--only-binary=:all:", *TARGET] if wheels else ["--no-binary=:all:"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind, "-d", str(folder)]
    subprocess.run([*command, *requirements], check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim_bitsandbytes(wheel: Path) -> int:
    """Rewrite ``wheel`` without the native libraries of other CUDA versions and ROCm / XPU (its RECORD
    rewritten to match); returns the bytes saved."""
    before = wheel.stat().st_size
    with zipfile.ZipFile(wheel) as source:
        kept = [
            item
            for item in source.infolist()
            if not item.filename.endswith(".so") or KEPT_LIBRARIES.search(item.filename)
        ]
        contents = {item.filename: source.read(item) for item in kept}
    record = next(name for name in contents if name.endswith(".dist-info/RECORD"))
    lines = [_record_line(name, data) for name, data in contents.items() if name != record]
    contents[record] = ("\n".join([*lines, f"{record},,"]) + "\n").encode()
    with tempfile.NamedTemporaryFile(dir=wheel.parent, suffix=".tmp", delete=False) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as target:
            for name, data in contents.items():
                target.writestr(name, data)
    Path(tmp.name).replace(wheel)
    return before - wheel.stat().st_size


def main(argv: list[str] | None = None) -> int:
    """Fetch the wheels into the folder given, trim bitsandbytes, print the sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where the wheels go (ignored by git: .gpu_wheels)")
    parser.add_argument("--no-deepspeed", action="store_true", help="leave DeepSpeed out (its checks are skipped)")
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    constraints = ROOT / "constraints.txt"
    download(pinned_versions(constraints, PINNED), args.folder, wheels=True)
    if not args.no_deepspeed:
        needs = [*pinned_versions(constraints, PINNED_FOR_DEEPSPEED), *UNPINNED_FOR_DEEPSPEED]
        download(needs, args.folder, wheels=True)
        download([DEEPSPEED_SOURCE], args.folder, wheels=False)
    for wheel in args.folder.glob("bitsandbytes-*.whl"):
        print(f"{wheel.name}: {slim_bitsandbytes(wheel) / 2**20:.1f} MiB of other CUDA versions' libraries removed")
    files = sorted(p for p in args.folder.iterdir() if p.is_file())
    for path in files:
        print(f"{path.stat().st_size / 2**20:7.2f} MiB  {path.name}")
    total = sum(p.stat().st_size for p in files)
    print(f"{total / 2**20:7.2f} MiB  in all (limit with the work tree: {TRAVEL_LIMIT / 2**20:.0f} MiB)")
    if total > TRAVEL_LIMIT - WORK_TREE_ROOM:
        print("error: too large to travel beside the work tree; try --no-deepspeed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
