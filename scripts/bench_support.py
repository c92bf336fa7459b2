"""What the benchmark scripts (scripts/bench, scripts/bench-throughput, scripts/bench-split,
scripts/bench-ledger) share: building the binaries, making clips with lavfi, the exact argv of a
plan, an S3/SQS emulator on 127.0.0.1 (with the job ledger's table), fresh deployments and
worker daemons."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(release: bool) -> Path:
    args = ["cargo", "build", "--quiet", "--bin", "media-worker"] + (["--release"] if release else [])
    subprocess.run(args, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / ("release" if release else "debug") / "media-worker"


def build_api(release: bool) -> Path:
    """`media-api`, built as build() builds `media-worker`, beside it in the same target folder."""
    binary = build(release)
    args = ["cargo", "build", "--quiet", "--bin", "media-api"] + (["--release"] if release else [])
    subprocess.run(args, cwd=ROOT, check=True)
    return binary.parent / "media-api"


def make_clip(path: Path, seconds: float, size: str = "1280x720", rate: int = 30, gop: int | None = None) -> None:
    """Test pattern video and a tone, H.264 + AAC; `gop`: frames between keyframes (a camera's
    usual one or two seconds), else the encoder's choice."""
    keyframes = ["-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"] if gop else []
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *keyframes, "-c:a", "aac", str(path)],
        check=True,
    )


def plan_argv(binary: Path, source: Path, presets: list, out: Path) -> list:
    """The argv the worker would run for a job with these presets (`media-worker plan`)."""
    args = [str(binary), "plan", str(source), "--out", str(out)]
    for preset in presets:
        args += ["--preset", preset]
    plan = json.loads(subprocess.run(args, capture_output=True, text=True, check=True,
                                     env={"PATH": os.environ["PATH"], "MEDIA_BACKEND": "local"}).stdout)
    for folder in plan["folders"]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return plan["args"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_time(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def start_moto():
    """moto's server on 127.0.0.1; it exits by itself with this process."""
    port = free_port()
    script = (
        "import os, time\n"
        "from moto.server import ThreadedMotoServer\n"
        "parent = os.getppid()\n"
        f"server = ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False)\n"
        "server.start()\n"
        "while os.getppid() == parent:\n    time.sleep(0.5)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    sys.exit("moto did not start")


def emulator_env(endpoint: str, binary: Path | None = None) -> dict:
    """A bucket `bench` notifying a ready queue of uploads, the three queues, the job ledger's
    table (made by `binary`: `media-worker ledger create-table`), and the settings that point a
    worker at them."""
    import boto3  # installed with moto

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
    s3.create_bucket(Bucket="bench")
    urls = [sqs.create_queue(QueueName=n)["QueueUrl"] for n in ("ready", "processing", "dead")]
    arn = sqs.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="bench", NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
    env = {
        "MEDIA_BACKEND": "aws", "MEDIA_S3_BUCKET": "bench", "MEDIA_S3_FORCE_PATH_STYLE": "true",
        "MEDIA_READY_QUEUE_URL": urls[0], "MEDIA_PROCESSING_QUEUE_URL": urls[1], "MEDIA_DEAD_LETTER_QUEUE_URL": urls[2],
        "MEDIA_JOBS_TABLE": "bench-jobs",
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true",
    }
    binary = binary or build(False)
    subprocess.run([str(binary), "ledger", "create-table"], env=dict(env, PATH=os.environ["PATH"]), check=True,
                   stdout=subprocess.DEVNULL)
    return env


class Backend:
    """A fresh deployment: a local data folder, or buckets and queues on a fresh moto."""

    def __init__(self, kind: str, work: Path, binary: Path | None = None):
        """`binary` makes the emulator's job ledger table (any build will do)."""
        self.kind, self.work, self.moto = kind, work, None
        work.mkdir(parents=True)
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(work), "RUST_LOG": "warn",
            "MEDIA_WORK_DIR": str(work / "scratch"),
            "MEDIA_REAPER_SCHEDULE": "*/5 * * * * *",
        }
        if kind == "local":
            self.env.update({"MEDIA_BACKEND": "local", "MEDIA_DATA_DIR": str(work / "data")})
        else:
            self.moto, endpoint = start_moto()
            self.env.update(emulator_env(endpoint, binary))

    def close(self):
        if self.moto:
            self.moto.terminate()
            self.moto.wait()


class Daemon:
    """A `media-worker run` with its metrics endpoint."""

    def __init__(self, binary: Path, backend: "Backend", name: str, concurrency: int,
                 cores: str | None = None, extra: dict | None = None):
        """`cores`: a CPU list for taskset (e.g. "0" or "2-3") to pin the worker and its ffmpeg to."""
        self.port = free_port()
        env = dict(backend.env, MEDIA_WORKER_ID=name, MEDIA_CONCURRENCY=str(concurrency),
                   MEDIA_METRICS_ADDR=f"127.0.0.1:{self.port}", **(extra or {}))
        self.log = open(backend.work / f"{name}.log", "w")
        pin = ["taskset", "-c", cores] if cores else []
        self.proc = subprocess.Popen([*pin, str(binary), "run"], env=env, cwd=backend.work,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 30
        while self.metric("receive_calls") is None:
            if time.monotonic() > deadline:
                sys.exit(f"worker {name} did not start")
            time.sleep(0.05)

    def metric(self, name: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"media_worker_{name}_total ") or line.startswith(f"media_worker_{name} "):
                return float(line.split()[-1])
        return None

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self.log.close()


def cli(binary: Path, backend: Backend, *args: str) -> str:
    return subprocess.run([str(binary), *args], env=backend.env, cwd=backend.work, check=True,
                          capture_output=True, text=True).stdout


def status_docs(binary: Path, backend: Backend) -> list[dict]:
    """Every job status (read through the ledger the backend uses, by the CLI)."""
    ids = cli(binary, backend, "jobs", "--limit", "0", "-q").split()
    return [json.loads(cli(binary, backend, "status", job_id)) for job_id in ids]
