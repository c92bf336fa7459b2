#!/usr/bin/env python3
"""Deploys infra/storage.yaml on the S3/SQS emulator and runs one job through the result.

    python3 infra/tests/deploy_on_emulator.py path/to/media-worker

Starts moto's server on 127.0.0.1 (a free port), creates the storage stack through the
emulator's CloudFormation, checks the queues it made, uploads a generated 2 s clip under the
upload prefix, runs `media-worker run --drain` with the stack's outputs as its environment, then
checks the outputs (ffprobe), the job status and that every queue is empty.

Needs moto[server] (which brings boto3 and PyYAML), ffmpeg and ffprobe. Prints
`deploy-on-emulator: 1 passed, 0 failed` on success; exits non-zero with the reason otherwise.

Emulator gap: moto's CloudFormation creates AWS::S3::Bucket without its NotificationConfiguration
(nor lifecycle, public access block, ownership controls) and skips AWS::S3::BucketPolicy,
AWS::SQS::QueuePolicy and AWS::CloudWatch::Alarm. When the bucket comes up without a
notification, this test reads the bucket's NotificationConfiguration from the template,
resolves it against the stack and applies it through the S3 API, so the upload event still
follows the template's own filter.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

NAME = "deploy-on-emulator"
HERE = Path(__file__).resolve().parent
TEMPLATE = HERE.parent / "storage.yaml"
STACK = "media-ci"
PARAMETERS = {"NamePrefix": "media-ci"}
REGION = "us-east-1"
CLIP_SECONDS = 2.0
WORKER_TIMEOUT = 300


class Failure(Exception):
    """A check that did not hold; the message says which."""


def log(message: str) -> None:
    print(f"[{NAME}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_template(text: str) -> dict:
    """Parses CloudFormation YAML, short-form intrinsics (!Ref, !GetAtt, ...) included."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        if name == "Fn::GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


class Emulator:
    def __init__(self, endpoint: str):
        import boto3
        from botocore.config import Config

        common = dict(
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        self.endpoint = endpoint
        self.cfn = boto3.client("cloudformation", **common)
        self.sqs = boto3.client("sqs", **common)
        self.s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}), **common)

    def queue_attributes(self, url: str) -> dict:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]

    def queue_counts(self, url: str) -> tuple[int, int, int]:
        attrs = self.queue_attributes(url)
        return tuple(
            int(attrs.get(name, "0"))
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )


def create_stack(emu: Emulator, template_text: str) -> dict[str, str]:
    emu.cfn.create_stack(
        StackName=STACK,
        TemplateBody=template_text,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in PARAMETERS.items()],
    )
    deadline = time.monotonic() + 120
    while True:
        stack = emu.cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            raise Failure(f"stack creation ended in {status}: {stack.get('StackStatusReason', '')}")
        time.sleep(0.5)
    outputs = {o["OutputKey"]: o for o in stack.get("Outputs", [])}
    log(f"stack {STACK} created with outputs: {', '.join(sorted(outputs))}")
    return outputs


def report_skipped(emu: Emulator, template: dict) -> None:
    """Names the template's resources the emulator did not create (types it does not model)."""
    resources = emu.cfn.describe_stack_resources(StackName=STACK)["StackResources"]
    created = {r.get("LogicalResourceId") for r in resources}
    skipped = [
        f"{logical_id} ({resource['Type']})"
        for logical_id, resource in template["Resources"].items()
        if logical_id not in created and "Condition" not in resource
    ]
    if skipped:
        log(f"not modelled by the emulator, so not checked here: {', '.join(skipped)}")


def environment_from_outputs(outputs: dict) -> dict[str, str]:
    """Outputs whose Description is a MEDIA_* variable name, as that variable."""
    env = {
        o["Description"]: o["OutputValue"]
        for o in outputs.values()
        if o.get("Description", "").startswith("MEDIA_")
    }
    required = [
        "MEDIA_S3_BUCKET",
        "MEDIA_READY_QUEUE_URL",
        "MEDIA_PROCESSING_QUEUE_URL",
        "MEDIA_DEAD_LETTER_QUEUE_URL",
    ]
    missing = [name for name in required if not env.get(name)]
    if missing:
        raise Failure(f"the stack has no output for {', '.join(missing)}")
    return env


def check_queues(emu: Emulator, template: dict, env: dict[str, str]) -> None:
    """The queues carry the template's redrive policy and retention."""
    params = template["Parameters"]
    ready = emu.queue_attributes(env["MEDIA_READY_QUEUE_URL"])
    processing = emu.queue_attributes(env["MEDIA_PROCESSING_QUEUE_URL"])
    dead = emu.queue_attributes(env["MEDIA_DEAD_LETTER_QUEUE_URL"])
    redrive = json.loads(ready.get("RedrivePolicy") or "{}")
    if redrive.get("deadLetterTargetArn") != dead["QueueArn"]:
        raise Failure(f"the ready queue does not redrive to the dead-letter queue: {redrive}")
    if int(redrive.get("maxReceiveCount", 0)) != int(params["MaxReceiveCount"]["Default"]):
        raise Failure(f"unexpected maxReceiveCount: {redrive}")
    if processing.get("RedrivePolicy"):
        raise Failure("the in-processing queue must not have a redrive policy")
    for name, attrs in (("ready", ready), ("processing", processing), ("dead-letter", dead)):
        days = int(attrs["MessageRetentionPeriod"]) / 86400
        if days < 4:
            raise Failure(f"the {name} queue keeps messages only {days:.1f} days")
    log("queues: redrive policy and retention as in the template")


def resolve(node, emu: Emulator, template: dict):
    """Resolves the few intrinsics a notification configuration uses, against the stack."""
    if isinstance(node, list):
        return [resolve(item, emu, template) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        name = node["Ref"]
        if name in PARAMETERS:
            return PARAMETERS[name]
        if name in template.get("Parameters", {}):
            return template["Parameters"][name]["Default"]
        raise Failure(f"cannot resolve Ref {name} in the notification configuration")
    if set(node) == {"Fn::GetAtt"}:
        logical_id, attribute = node["Fn::GetAtt"]
        resource = template["Resources"][logical_id]
        if resource["Type"] == "AWS::SQS::Queue" and attribute == "Arn":
            url = emu.cfn.describe_stack_resource(StackName=STACK, LogicalResourceId=logical_id)[
                "StackResourceDetail"
            ]["PhysicalResourceId"]
            return emu.queue_attributes(url)["QueueArn"]
        raise Failure(f"cannot resolve GetAtt {logical_id}.{attribute} in the notification configuration")
    return {key: resolve(value, emu, template) for key, value in node.items()}


def ensure_notification(emu: Emulator, template: dict, bucket: str) -> None:
    current = emu.s3.get_bucket_notification_configuration(Bucket=bucket)
    if current.get("QueueConfigurations"):
        log("bucket notification: created by the stack")
        return
    props = template["Resources"]["Bucket"]["Properties"]
    config = resolve(props["NotificationConfiguration"], emu, template)
    queue_configs = []
    for qc in config.get("QueueConfigurations", []):
        entry = {"QueueArn": qc["Queue"], "Events": [qc["Event"]]}
        rules = qc.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}
        queue_configs.append(entry)
    if not queue_configs:
        raise Failure("the template's bucket has no queue notification")
    emu.s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queue_configs}
    )
    log("bucket notification: applied from the template through the S3 API (the emulator's CloudFormation skips it)")


def make_clip(path: Path) -> None:
    seconds = f"{CLIP_SECONDS:g}"
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=25:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(path),
        ],
        check=True,
    )


def wait_for_event(emu: Emulator, url: str, before: int, seconds: float) -> None:
    """Waits until the ready queue holds more messages than `before` (the upload's event; S3
    may also have queued an s3:TestEvent when the notification was set up)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sum(emu.queue_counts(url)) > before:
            return
        time.sleep(0.2)
    raise Failure("no upload event reached the ready queue: the bucket notification does not work")


def run_worker(worker: Path, env_vars: dict[str, str], endpoint: str, scratch: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDIA_"))}
    env.update(env_vars)
    env.update(
        {
            "MEDIA_S3_FORCE_PATH_STYLE": "true",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "MEDIA_POLL_SCHEDULE": "*/1 * * * * *",
            "MEDIA_REAPER_SCHEDULE": "*/1 * * * * *",
            "MEDIA_HEARTBEAT_INTERVAL": "1s",
            "MEDIA_HEARTBEAT_TIMEOUT": "4s",
            "MEDIA_WORK_DIR": str(scratch / "work"),
        }
    )
    cwd = scratch / "cwd"
    cwd.mkdir()
    log_path = scratch / "worker.log"
    started = time.monotonic()
    with open(log_path, "w") as log_file:
        try:
            proc = subprocess.run(
                [str(worker), "run", "--drain"],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                timeout=WORKER_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise Failure(f"media-worker run --drain did not finish within {WORKER_TIMEOUT} s\n{tail(log_path)}")
    if proc.returncode != 0:
        raise Failure(f"media-worker run --drain exited {proc.returncode}\n{tail(log_path)}")
    summary = [line for line in log_path.read_text().splitlines() if line.startswith("drained:")]
    log(f"worker drained in {time.monotonic() - started:.1f} s: {summary[-1] if summary else '(no summary)'}")


def tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "--- worker log (last lines) ---\n" + "\n".join(text[-lines:])


def check_results(emu: Emulator, env: dict[str, str], scratch: Path) -> None:
    bucket = env["MEDIA_S3_BUCKET"]
    out_dir = env.get("MEDIA_OUTPUT_PREFIX", "outputs/") + "ci/clip/"
    keys = {o["Key"] for o in emu.s3.list_objects_v2(Bucket=bucket, Prefix=out_dir).get("Contents", [])}
    for name in ("mp4-h264.mp4", "manifest.json"):
        if out_dir + name not in keys:
            raise Failure(f"missing output {out_dir + name}; found {sorted(keys)}")

    manifest = json.loads(emu.s3.get_object(Bucket=bucket, Key=out_dir + "manifest.json")["Body"].read())
    if not any(o.get("key") == out_dir + "mp4-h264.mp4" for o in manifest.get("outputs", [])):
        raise Failure(f"the manifest does not list the output: {manifest}")

    local = scratch / "output.mp4"
    emu.s3.download_file(bucket, out_dir + "mp4-h264.mp4", str(local))
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name:format=duration",
             "-of", "json", str(local)],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    codecs = {s["codec_type"]: s["codec_name"] for s in probe.get("streams", [])}
    if codecs.get("video") != "h264" or codecs.get("audio") != "aac":
        raise Failure(f"expected h264 video and aac audio, got {codecs}")
    duration = float(probe["format"]["duration"])
    if abs(duration - CLIP_SECONDS) > 0.3:
        raise Failure(f"output lasts {duration:.3f} s, expected {CLIP_SECONDS} s +/- 0.3 s")
    log(f"output: h264 + aac, {duration:.3f} s, {local.stat().st_size} bytes")

    statuses = emu.s3.list_objects_v2(Bucket=bucket, Prefix="jobs/").get("Contents", [])
    if len(statuses) != 1:
        raise Failure(f"expected one job status document, found {[s['Key'] for s in statuses]}")
    status = json.loads(emu.s3.get_object(Bucket=bucket, Key=statuses[0]["Key"])["Body"].read())
    if status.get("state") != "completed":
        raise Failure(f"the job ended {status.get('state')}: {status.get('error')}")
    log(f"job {status['job_id']}: completed")

    for var in ("MEDIA_READY_QUEUE_URL", "MEDIA_PROCESSING_QUEUE_URL", "MEDIA_DEAD_LETTER_QUEUE_URL"):
        counts = emu.queue_counts(env[var])
        if any(counts):
            raise Failure(f"{var} is not empty (visible, in flight, delayed): {counts}")
    log("queues: all three empty")


def run(worker: Path) -> None:
    from moto.server import ThreadedMotoServer

    # The emulator's request log and its warnings about unmodelled resource types are noise
    # here; report_skipped() names those resources instead.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*not supported by moto")

    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise Failure(f"{tool} is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        emu = Emulator(endpoint)
        template_text = TEMPLATE.read_text()
        template = load_template(template_text)
        outputs = create_stack(emu, template_text)
        report_skipped(emu, template)
        env = environment_from_outputs(outputs)
        check_queues(emu, template, env)
        ensure_notification(emu, template, env["MEDIA_S3_BUCKET"])

        with tempfile.TemporaryDirectory(prefix="deploy-on-emulator-") as tmp:
            scratch = Path(tmp)
            clip = scratch / "clip.mp4"
            make_clip(clip)
            key = env.get("MEDIA_UPLOAD_PREFIX", "uploads/") + "ci/clip.mp4"
            before = sum(emu.queue_counts(env["MEDIA_READY_QUEUE_URL"]))
            emu.s3.upload_file(str(clip), env["MEDIA_S3_BUCKET"], key)
            log(f"uploaded s3://{env['MEDIA_S3_BUCKET']}/{key}")
            wait_for_event(emu, env["MEDIA_READY_QUEUE_URL"], before, 10)
            run_worker(worker, env, endpoint, scratch)
            check_results(emu, env, scratch)
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} PATH_TO_MEDIA_WORKER", file=sys.stderr)
        return 2
    worker = Path(argv[1]).resolve()
    if not (worker.is_file() and os.access(worker, os.X_OK)):
        print(f"{NAME}: {worker} is not an executable file", file=sys.stderr)
        return 2
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as err:
        print(f"{NAME}: {err}; install the emulator with: pip install 'moto[server]==5.2.5'", file=sys.stderr)
        return 2
    try:
        run(worker)
    except Failure as failure:
        print(f"{NAME}: FAILED: {failure}", file=sys.stderr)
        print(f"{NAME}: 0 passed, 1 failed")
        return 1
    except Exception as err:  # noqa: BLE001 - any other error fails the test with its reason
        print(f"{NAME}: FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        print(f"{NAME}: 0 passed, 1 failed")
        return 1
    print(f"{NAME}: 1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
