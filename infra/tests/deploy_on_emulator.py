#!/usr/bin/env python3
"""Deploys the CloudFormation templates on the AWS emulator and runs one job through them.

    python3 infra/tests/deploy_on_emulator.py path/to/media-worker

Starts moto's server on 127.0.0.1 (a free port), then:

1. storage stack runs a job: creates infra/storage.yaml through the emulator's CloudFormation,
   checks the queues it made (redrive policy, retention) and the job ledger table (its key and
   indexes as the template defines them), uploads a generated 2 s clip under the upload prefix,
   runs `media-worker run --drain` with the stack's outputs as its environment, and checks the
   outputs (ffprobe: h264 + aac, 2 s), the manifest, the job status (from the table; from the
   bucket while the worker still keeps it there), an empty outbox and that all four queues
   are empty; then a browser-style upload: a preflight and a PUT with
   `Origin` to a presigned URL pass from the allowed origin (ETag exposed), and a preflight
   from another origin is refused;
2. service stack on the storage stack: creates infra/service.yaml (API on) against the first
   stack's exports, and checks the task definitions (the storage outputs as environment,
   commands, stopTimeout above MEDIA_SHUTDOWN_GRACE, the scratch volume, the token secret) and
   the template's IAM statements (no wildcards).

Needs moto[server] (which brings boto3 and PyYAML), ffmpeg and ffprobe. Ends with
`deploy-on-emulator: N passed, N failed`; exits non-zero when any test failed.

Emulator gaps, named in the output as "not modelled": moto's CloudFormation skips
AWS::S3::BucketPolicy, AWS::SQS::QueuePolicy, AWS::CloudWatch::Alarm, AWS::EC2::SecurityGroupEgress
and Application Auto Scaling resources, creates AWS::S3::Bucket without its notification,
lifecycle, public access block and ownership settings, and AWS::DynamoDB::Table without its TTL
and point-in-time recovery (the worker needs neither: TTL only removes old records). When the bucket comes up without a
notification, test 1 reads the bucket's NotificationConfiguration from the template, resolves
it against the stack and applies it through the S3 API, so the upload event still follows the
template's own filter; the bucket's CORS rules are applied from the template the same way.
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
STORAGE_TEMPLATE = HERE.parent / "storage.yaml"
SERVICE_TEMPLATE = HERE.parent / "service.yaml"
STORAGE_STACK = "media-ci"
BROWSER_ORIGIN = "https://app.example.com"
STORAGE_PARAMETERS = {"NamePrefix": "media-ci", "CorsAllowedOrigins": BROWSER_ORIGIN}
SERVICE_STACK = "media-ci-service"
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
        self.dynamodb = boto3.client("dynamodb", **common)

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


def create_stack(emu: Emulator, name: str, template_text: str, parameters: dict[str, str]) -> dict:
    emu.cfn.create_stack(
        StackName=name,
        TemplateBody=template_text,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )
    deadline = time.monotonic() + 120
    while True:
        stack = emu.cfn.describe_stacks(StackName=name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            break
        if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
            raise Failure(f"stack {name} ended in {status}: {stack.get('StackStatusReason', '')}")
        time.sleep(0.5)
    outputs = {o["OutputKey"]: o for o in stack.get("Outputs", [])}
    log(f"stack {name} created with outputs: {', '.join(sorted(outputs))}")
    return outputs


def report_skipped(emu: Emulator, name: str, template: dict, true_conditions: frozenset = frozenset()) -> None:
    """Names the template's resources the emulator did not create (types it does not model);
    resources under a condition count only when that condition holds in this deployment."""
    resources = emu.cfn.describe_stack_resources(StackName=name)["StackResources"]
    created = {r.get("LogicalResourceId") for r in resources}
    skipped = [
        f"{logical_id} ({resource['Type']})"
        for logical_id, resource in template["Resources"].items()
        if logical_id not in created and resource.get("Condition", True) in (True, *true_conditions)
    ]
    if skipped:
        log(f"{name}: not modelled by the emulator, so not checked here: {', '.join(skipped)}")


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
        "MEDIA_NOTIFY_QUEUE_URL",
        "MEDIA_JOBS_TABLE",
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


def check_table(emu: Emulator, template: dict, env: dict[str, str]) -> None:
    """The job ledger table has the template's key, indexes (keys and projections) and billing:
    the ones the engine queries (src/ledger/dynamo/items.rs)."""
    props = template["Resources"]["JobsTable"]["Properties"]
    table = emu.dynamodb.describe_table(TableName=env["MEDIA_JOBS_TABLE"])["Table"]
    if table["KeySchema"] != props["KeySchema"]:
        raise Failure(f"the table's key is {table['KeySchema']}, the template says {props['KeySchema']}")
    billing = table.get("BillingModeSummary", {}).get("BillingMode")
    if billing != props["BillingMode"]:
        raise Failure(f"the table bills {billing}, the template says {props['BillingMode']}")

    def shape(index: dict) -> tuple:
        projection = index["Projection"]
        included = tuple(sorted(projection.get("NonKeyAttributes", [])))
        keys = tuple((k["AttributeName"], k["KeyType"]) for k in index["KeySchema"])
        return keys, projection["ProjectionType"], included

    deployed = {i["IndexName"]: shape(i) for i in table.get("GlobalSecondaryIndexes", [])}
    wanted = {i["IndexName"]: shape(i) for i in props["GlobalSecondaryIndexes"]}
    if deployed != wanted:
        raise Failure(f"the table's indexes are {deployed}, the template says {wanted}")
    ttl = emu.dynamodb.describe_time_to_live(TableName=env["MEDIA_JOBS_TABLE"])["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") != "ENABLED":
        log("job ledger table: TTL not modelled by the emulator's CloudFormation, so not checked here")
    log(f"job ledger table: key, {len(wanted)} indexes and on-demand billing as in the template")


def ledger_status(emu: Emulator, table: str) -> dict | None:
    """The one job's status from the job ledger table, or None when the table holds no job.
    Fails if events are left in the outbox. A Scan is fine here: the table holds this test's
    one job."""
    items = []
    scan: dict = {"TableName": table}
    while True:
        page = emu.dynamodb.scan(**scan)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            break
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    keys = [item["pk"]["S"] for item in items]
    jobs = [item for item in items if item["pk"]["S"].startswith("job#")]
    if not jobs:
        return None
    if len(jobs) != 1:
        raise Failure(f"expected one job record in the table, found {[j['pk']['S'] for j in jobs]}")
    unsent = [key for key in keys if key.startswith("outbox#")]
    if unsent:
        raise Failure(f"events left unsent in the outbox after the drain: {unsent}")
    return json.loads(jobs[0]["doc"]["S"])


def resolve(node, emu: Emulator, template: dict):
    """Resolves the few intrinsics a notification configuration uses, against the stack."""
    if isinstance(node, list):
        return [resolve(item, emu, template) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        name = node["Ref"]
        if name in STORAGE_PARAMETERS:
            return STORAGE_PARAMETERS[name]
        if name in template.get("Parameters", {}):
            return template["Parameters"][name]["Default"]
        raise Failure(f"cannot resolve Ref {name} in the notification configuration")
    if set(node) == {"Fn::GetAtt"}:
        logical_id, attribute = node["Fn::GetAtt"]
        resource = template["Resources"][logical_id]
        if resource["Type"] == "AWS::SQS::Queue" and attribute == "Arn":
            url = emu.cfn.describe_stack_resource(StackName=STORAGE_STACK, LogicalResourceId=logical_id)[
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


def ensure_cors(emu: Emulator, template: dict, bucket: str) -> None:
    """The template's CORS rules on the bucket, with the origins the stack was given."""
    try:
        if emu.s3.get_bucket_cors(Bucket=bucket).get("CORSRules"):
            log("bucket CORS: created by the stack")
            return
    except emu.s3.exceptions.ClientError:
        pass
    condition, rules, _ = template["Resources"]["Bucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    if condition != "HasCorsOrigins":
        raise Failure(f"the bucket's CORS rules hang on {condition}, not HasCorsOrigins")
    origins = STORAGE_PARAMETERS["CorsAllowedOrigins"].split(",")
    cors_rules = []
    for rule in rules["CorsRules"]:
        if rule["AllowedOrigins"] != {"Ref": "CorsAllowedOrigins"}:
            raise Failure(f"a CORS rule's origins are not the CorsAllowedOrigins parameter: {rule['AllowedOrigins']}")
        cors_rules.append(
            {
                "AllowedOrigins": origins,
                "AllowedMethods": rule["AllowedMethods"],
                "AllowedHeaders": rule["AllowedHeaders"],
                "ExposeHeaders": rule["ExposedHeaders"],
                "MaxAgeSeconds": int(rule["MaxAge"]),
            }
        )
    emu.s3.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": cors_rules})
    log("bucket CORS: applied from the template through the S3 API (the emulator's CloudFormation skips it)")


def http(method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> tuple[int, dict[str, str]]:
    """One request to the emulator on 127.0.0.1; the status and headers (lowercase names)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the emulator on 127.0.0.1
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}


def check_browser_upload(emu: Emulator, bucket: str) -> None:
    """A page on the allowed origin PUTs to a presigned URL as a browser does: a preflight,
    then the PUT with `Origin`, reading the ETag. Another origin's preflight is refused."""
    key = "browser-check/part.bin"
    url = emu.s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": key, "ContentType": "video/mp4"}, ExpiresIn=300
    )
    asks = {"Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "content-type"}
    # S3 answers a preflight from the bucket's CORS rules alone; the emulator also checks the
    # presigned query's headers on OPTIONS, which a preflight never carries, so the preflight
    # goes to the object's URL without the query.
    object_url = url.split("?", 1)[0]
    status, headers = http("OPTIONS", object_url, {"Origin": BROWSER_ORIGIN, **asks})
    if status != 200 or headers.get("access-control-allow-origin") != BROWSER_ORIGIN:
        raise Failure(f"preflight from {BROWSER_ORIGIN}: {status} {headers}")
    if "PUT" not in headers.get("access-control-allow-methods", ""):
        raise Failure(f"preflight from {BROWSER_ORIGIN} does not allow PUT: {headers}")
    status, headers = http("PUT", url, {"Origin": BROWSER_ORIGIN, "Content-Type": "video/mp4"}, b"x" * 1024)
    if status != 200 or headers.get("access-control-allow-origin") != BROWSER_ORIGIN:
        raise Failure(f"PUT from {BROWSER_ORIGIN}: {status} {headers}")
    if "etag" not in headers.get("access-control-expose-headers", "").lower() or not headers.get("etag"):
        raise Failure(f"PUT from {BROWSER_ORIGIN} does not expose its ETag: {headers}")
    stored = emu.s3.head_object(Bucket=bucket, Key=key)
    if stored["ContentLength"] != 1024:
        raise Failure(f"the browser's PUT stored {stored['ContentLength']} bytes")
    emu.s3.delete_object(Bucket=bucket, Key=key)
    status, headers = http("OPTIONS", object_url, {"Origin": "https://elsewhere.example.net", **asks})
    if status == 200 and "access-control-allow-origin" in headers:
        raise Failure(f"preflight from another origin was allowed: {status} {headers}")
    log(f"browser upload: preflight and PUT from {BROWSER_ORIGIN} pass, ETag exposed; another origin refused")


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
    status = ledger_status(emu, env["MEDIA_JOBS_TABLE"])
    if status is None:
        raise Failure("the job ledger table holds no job")
    # Job state lives in the table only: nothing is written under jobs/ in the bucket.
    stray = emu.s3.list_objects_v2(Bucket=bucket, Prefix="jobs/").get("Contents", [])
    if stray:
        raise Failure(f"objects under jobs/ in the bucket: {[o['Key'] for o in stray]}")
    if status.get("state") != "completed":
        raise Failure(f"the job ended {status.get('state')}: {status.get('error')}")
    log(f"job {status['job_id']}: completed (status read from the job ledger table; nothing under jobs/)")

    # The job's own folder: outputs/<path>/<file name>/<job id>/, the attempt's files in attempt-<n>/.
    out_dir = status["job"]["output_dir"]
    expected_dir = env.get("MEDIA_OUTPUT_PREFIX", "outputs/") + f"ci/clip.mp4/{status['job_id']}/"
    if out_dir != expected_dir:
        raise Failure(f"the job's folder is {out_dir}, expected {expected_dir}")
    output_key = f"{out_dir}attempt-{status['attempt']}/mp4-h264.mp4"
    scores_key = f"{out_dir}attempt-{status['attempt']}/quality.json"
    keys = {o["Key"] for o in emu.s3.list_objects_v2(Bucket=bucket, Prefix=out_dir).get("Contents", [])}
    if keys != {output_key, scores_key, out_dir + "manifest.json"}:
        raise Failure(f"expected exactly {output_key}, its scores and the manifest; found {sorted(keys)}")

    manifest = json.loads(emu.s3.get_object(Bucket=bucket, Key=out_dir + "manifest.json")["Body"].read())
    if not any(o.get("key") == output_key for o in manifest.get("outputs", [])):
        raise Failure(f"the manifest does not list the output: {manifest}")

    local = scratch / "output.mp4"
    emu.s3.download_file(bucket, output_key, str(local))
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

    for var in (
        "MEDIA_READY_QUEUE_URL",
        "MEDIA_PROCESSING_QUEUE_URL",
        "MEDIA_DEAD_LETTER_QUEUE_URL",
        "MEDIA_NOTIFY_QUEUE_URL",
    ):
        counts = emu.queue_counts(env[var])
        if any(counts):
            raise Failure(f"{var} is not empty (visible, in flight, delayed): {counts}")
    log("queues: all four empty")


def test_storage_stack_runs_a_job(emu: Emulator, worker: Path) -> dict[str, str]:
    """Test 1: the storage stack deploys, and a worker configured from its outputs alone turns
    an upload into outputs, leaving every queue empty. Returns the stack's environment."""
    template_text = STORAGE_TEMPLATE.read_text()
    template = load_template(template_text)
    outputs = create_stack(emu, STORAGE_STACK, template_text, STORAGE_PARAMETERS)
    report_skipped(emu, STORAGE_STACK, template)
    env = environment_from_outputs(outputs)
    check_queues(emu, template, env)
    check_table(emu, template, env)
    ensure_notification(emu, template, env["MEDIA_S3_BUCKET"])
    ensure_cors(emu, template, env["MEDIA_S3_BUCKET"])
    check_browser_upload(emu, env["MEDIA_S3_BUCKET"])

    with tempfile.TemporaryDirectory(prefix="deploy-on-emulator-") as tmp:
        scratch = Path(tmp)
        clip = scratch / "clip.mp4"
        make_clip(clip)
        key = env.get("MEDIA_UPLOAD_PREFIX", "uploads/") + "ci/clip.mp4"
        before = sum(emu.queue_counts(env["MEDIA_READY_QUEUE_URL"]))
        emu.s3.upload_file(str(clip), env["MEDIA_S3_BUCKET"], key)
        log(f"uploaded s3://{env['MEDIA_S3_BUCKET']}/{key}")
        wait_for_event(emu, env["MEDIA_READY_QUEUE_URL"], before, 10)
        run_worker(worker, env, emu.endpoint, scratch)
        check_results(emu, env, scratch)
    return env


def test_service_stack_on_storage(emu: Emulator, storage_env: dict[str, str]) -> None:
    """Test 2: the service stack deploys on top of the storage stack (its imports match the
    storage exports) and its task definitions carry what the binaries need."""
    import boto3

    common = dict(endpoint_url=emu.endpoint, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
    ec2 = boto3.client("ec2", **common)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    certificate = boto3.client("acm", **common).request_certificate(DomainName="media.example.test")["CertificateArn"]
    secret = boto3.client("secretsmanager", **common).create_secret(
        Name="media-ci/api-tokens", SecretString="0123456789abcdef0123456789abcdef"
    )["ARN"]
    template_text = SERVICE_TEMPLATE.read_text()
    template = load_template(template_text)
    create_stack(
        emu,
        SERVICE_STACK,
        template_text,
        {
            "StorageStackName": STORAGE_STACK,
            "ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/media-worker:ci",
            "VpcId": vpc,
            "TaskSubnetIds": ",".join(subnets),
            "ApiEnabled": "true",
            "ApiTokensSecretArn": secret,
            "ApiCertificateArn": certificate,
            "LoadBalancerSubnetIds": ",".join(subnets),
        },
    )
    report_skipped(emu, SERVICE_STACK, template, frozenset({"ApiOn"}))

    ecs = boto3.client("ecs", **common)
    families = {}
    for arn in ecs.list_task_definitions()["taskDefinitionArns"]:
        definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        families[definition["family"]] = definition
    worker = families.get(f"{SERVICE_STACK}-worker")
    api = families.get(f"{SERVICE_STACK}-api")
    if not worker or not api:
        raise Failure(f"expected worker and api task definitions, found {sorted(families)}")

    for definition, command in ((worker, ["media-worker", "run"]), (api, ["media-api"])):
        container = definition["containerDefinitions"][0]
        name = definition["family"]
        if container.get("command") != command:
            raise Failure(f"{name}: command {container.get('command')}, expected {command}")
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        for var, value in storage_env.items():
            if env.get(var) != value:
                raise Failure(f"{name}: {var} is {env.get(var)!r}, the storage stack says {value!r}")
        if container.get("readonlyRootFilesystem") is not True or container.get("user") != "10001:10001":
            raise Failure(f"{name}: expected a read-only root filesystem and user 10001")
        if any("TOKEN" in var or "SECRET" in var for var in env):
            raise Failure(f"{name}: a secret-looking variable is set in plain text")

    container = worker["containerDefinitions"][0]
    env = {e["name"]: e["value"] for e in container["environment"]}
    grace = env.get("MEDIA_SHUTDOWN_GRACE", "")
    if container.get("stopTimeout") != 120 or not (grace.endswith("s") and int(grace[:-1]) < 120):
        raise Failure(f"worker: stopTimeout {container.get('stopTimeout')} and MEDIA_SHUTDOWN_GRACE {grace!r}")
    mounts = {m["containerPath"] for m in container.get("mountPoints", [])}
    if env.get("MEDIA_WORK_DIR") not in mounts:
        raise Failure(f"worker: MEDIA_WORK_DIR {env.get('MEDIA_WORK_DIR')} is not a mounted volume ({mounts})")
    secrets = {s["name"]: s["valueFrom"] for s in api["containerDefinitions"][0].get("secrets", [])}
    if secrets.get("MEDIA_API_TOKENS") != secret:
        raise Failure(f"api: MEDIA_API_TOKENS should come from the secret, got {secrets}")
    log("task definitions: storage outputs, commands, stop timeout, scratch volume and token secret as expected")

    # The emulator does not return role policies made by CloudFormation faithfully, so the
    # template's own statements are checked: no Allow with a wildcard action or resource.
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] not in ("AWS::IAM::Role", "AWS::IAM::Policy"):
            continue
        documents = [p["PolicyDocument"] for p in resource["Properties"].get("Policies", [])]
        if "PolicyDocument" in resource["Properties"]:
            documents.append(resource["Properties"]["PolicyDocument"])
        for document in documents:
            for statement in statements(document["Statement"]):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                if statement["Effect"] == "Allow" and (
                    any(a == "*" or a.endswith(":*") for a in actions) or "*" in resources
                ):
                    raise Failure(f"{logical_id}: a wildcard grant: {statement}")
    log("roles: no wildcard actions or resources in the template's policies")


def statements(listed: list) -> list:
    """Policy statements, with both branches of a conditional one (`Fn::If`), `AWS::NoValue` left out."""
    out = []
    for statement in listed:
        if isinstance(statement, dict) and "Fn::If" in statement:
            out += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
        else:
            out.append(statement)
    return out


def run(worker: Path) -> tuple[int, int]:
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
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    passed = failed = 0
    try:
        emu = Emulator(f"http://127.0.0.1:{port}")
        storage_env = None
        tests = [
            ("storage stack runs a job", lambda: test_storage_stack_runs_a_job(emu, worker)),
            ("service stack on the storage stack", lambda: test_service_stack_on_storage(emu, storage_env)),
        ]
        for title, test in tests:
            if title.startswith("service") and storage_env is None:
                print(f"{NAME}: FAILED: {title}: skipped, the storage stack did not deploy", file=sys.stderr)
                failed += 1
                continue
            try:
                result = test()
                if title.startswith("storage"):
                    storage_env = result
                log(f"PASS: {title}")
                passed += 1
            except Failure as failure:
                print(f"{NAME}: FAILED: {title}: {failure}", file=sys.stderr)
                failed += 1
            except Exception as err:  # noqa: BLE001 - any other error fails the test with its reason
                print(f"{NAME}: FAILED: {title}: {type(err).__name__}: {err}", file=sys.stderr)
                failed += 1
    finally:
        server.stop()
    return passed, failed


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
        passed, failed = run(worker)
    except Failure as failure:
        print(f"{NAME}: FAILED: {failure}", file=sys.stderr)
        passed, failed = 0, 1
    print(f"{NAME}: {passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
