"""What the benchmark scripts (scripts/bench, scripts/bench-throughput) share: building the
binary, making clips with lavfi, the exact argv of a plan, and an S3/SQS emulator on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(release: bool) -> Path:
    args = ["cargo", "build", "--quiet", "--bin", "media-worker"] + (["--release"] if release else [])
    subprocess.run(args, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / ("release" if release else "debug") / "media-worker"


def make_clip(path: Path, seconds: float, size: str = "1280x720", rate: int = 30) -> None:
    """Test pattern video and a tone, H.264 + AAC."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
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


def emulator_env(endpoint: str) -> dict:
    """A bucket `bench` notifying a ready queue of uploads, the three queues, and the settings
    that point a worker at them."""
    import boto3  # installed with moto

    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
    s3, sqs = boto3.client("s3", **kw), boto3.client("sqs", **kw)
    s3.create_bucket(Bucket="bench")
    urls = [sqs.create_queue(QueueName=n)["QueueUrl"] for n in ("ready", "processing", "dead")]
    arn = sqs.get_queue_attributes(QueueUrl=urls[0], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="bench", NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"}]}}}]})
    return {
        "MEDIA_BACKEND": "aws", "MEDIA_S3_BUCKET": "bench", "MEDIA_S3_FORCE_PATH_STYLE": "true",
        "MEDIA_READY_QUEUE_URL": urls[0], "MEDIA_PROCESSING_QUEUE_URL": urls[1], "MEDIA_DEAD_LETTER_QUEUE_URL": urls[2],
        "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true",
    }
