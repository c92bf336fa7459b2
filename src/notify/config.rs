//! Notification settings, in their own table ([`NOTIFY_VARIABLES`]) that `--help` prints and
//! `.env.example` mirrors, read by the worker, the API and the CLI alike. They are part of
//! [`crate::config::Config`], which reads them through [`NotifySettings::from_lookup`]; this
//! file reads only the shared shape of a table ([`crate::config::table`]), never `Config`.

use std::time::Duration;

use super::event::EventType;
use super::sign::Secrets;
use crate::config::table::{ConfigError, Env, Variable, parse_bool};
use crate::outbound::{Guard, Policy};

pub const NOTIFY_VARIABLES: &[Variable] = &[
    Variable {
        name: "MEDIA_WEBHOOK_URLS",
        default: "",
        help: "webhook endpoints told about every job, `;`-separated; each an https URL, optionally followed by a space and the comma-separated event types it wants (job.completed,job.failed); default: all types",
    },
    Variable {
        name: "MEDIA_WEBHOOK_SECRET",
        default: "",
        help: "whsec_<base64> secret signing webhooks (Standard Webhooks); several, space-separated, during a rotation (each signs). Required for MEDIA_WEBHOOK_URLS and for per-job `notify` URLs",
    },
    Variable {
        name: "MEDIA_WEBHOOK_RETRY_SCHEDULE",
        default: "0s,5s,5m,30m,2h,5h,10h,10h",
        help: "delay before each delivery attempt of a webhook (the first is usually 0s); the number of entries is the number of attempts",
    },
    Variable {
        name: "MEDIA_WEBHOOK_TIMEOUT",
        default: "15s",
        help: "time limit of one webhook request, answer included (connecting gets at most 5s of it)",
    },
    Variable {
        name: "MEDIA_WEBHOOK_CONCURRENCY",
        default: "16",
        help: "webhook requests a worker has in flight at once",
    },
    Variable {
        name: "MEDIA_WEBHOOK_ALLOW_LOOPBACK",
        default: "false",
        help: "DEVELOPMENT ONLY: allow plain http:// webhooks to loopback addresses (127.0.0.0/8, ::1); private and metadata addresses stay refused",
    },
    Variable {
        name: "MEDIA_NOTIFY_PROGRESS_INTERVAL",
        default: "10s",
        help: "job.progress events of a job are at least this far apart (and only sent when the progress or stage changed)",
    },
    Variable {
        name: "MEDIA_EVENTBRIDGE_BUS",
        default: "",
        help: "aws backend: also put every event on this EventBridge bus (name or ARN), detail-type `Media Job State Change`",
    },
    Variable {
        name: "MEDIA_EVENTBRIDGE_SOURCE",
        default: "media-worker",
        help: "the `source` of those EventBridge events",
    },
    Variable {
        name: "MEDIA_SNS_TOPIC_ARN",
        default: "",
        help: "aws backend: also publish every event to this SNS topic (message attribute `type` is the event type)",
    },
    Variable {
        name: "MEDIA_NOTIFY_QUEUE_URL",
        default: "",
        help: "aws backend: SQS queue carrying notifications to the workers that deliver them; required when notifications are configured (the local backend keeps its own)",
    },
];

/// One deployment-wide webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// Empty: every type.
    pub types: Vec<EventType>,
}

impl Endpoint {
    pub fn wants(&self, kind: EventType) -> bool {
        self.types.is_empty() || self.types.contains(&kind)
    }
}

/// Parsed notification settings. `Debug` leaves the secrets out.
#[derive(Clone)]
pub struct NotifySettings {
    pub endpoints: Vec<Endpoint>,
    pub secrets: Secrets,
    /// Delay before each attempt; its length is the number of attempts.
    pub schedule: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency: usize,
    pub policy: Policy,
    pub progress_interval: Duration,
    pub queue_url: Option<String>,
    pub eventbridge_bus: Option<String>,
    pub eventbridge_source: String,
    pub sns_topic_arn: Option<String>,
}

impl std::fmt::Debug for NotifySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifySettings")
            .field("endpoints", &self.endpoints.len())
            .field("secrets", &if self.secrets.is_empty() { "none" } else { "set" })
            .field("schedule", &self.schedule)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl NotifySettings {
    /// Whether anything at all can be notified: webhooks (deployment or per-job), or AWS.
    pub fn enabled(&self) -> bool {
        self.webhooks() || self.aws_fan_out()
    }

    /// Whether webhooks can be signed (deployment endpoints, per-job URLs).
    pub fn webhooks(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// Whether events also go to EventBridge or SNS.
    pub fn aws_fan_out(&self) -> bool {
        self.eventbridge_bus.is_some() || self.sns_topic_arn.is_some()
    }

    pub fn guard(&self) -> Guard {
        Guard::new(self.policy)
    }

    /// Parses the notification settings from any lookup; `aws`: whether the deployment runs on
    /// the AWS backend (EventBridge and SNS need it, and it needs a notifications queue).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>, aws: bool) -> Result<Self, ConfigError> {
        let env = Env::new(lookup, NOTIFY_VARIABLES);
        let secrets = env.parse_with("MEDIA_WEBHOOK_SECRET", Secrets::parse)?;
        let policy = Policy { allow_loopback: env.parse_with("MEDIA_WEBHOOK_ALLOW_LOOPBACK", parse_bool)? };
        let endpoints = parse_endpoints(&env.or_default("MEDIA_WEBHOOK_URLS"), &Guard::new(policy))
            .map_err(|m| ConfigError::new("MEDIA_WEBHOOK_URLS", m))?;
        if !endpoints.is_empty() && secrets.is_empty() {
            return Err(ConfigError::new("MEDIA_WEBHOOK_SECRET", "is required with MEDIA_WEBHOOK_URLS"));
        }
        let schedule = env.parse_with("MEDIA_WEBHOOK_RETRY_SCHEDULE", parse_schedule)?;
        let duration = |name: &'static str| {
            env.parse_with(name, |raw| humantime::parse_duration(raw).map_err(|e| format!("expected a duration: {e}")))
        };
        let timeout = duration("MEDIA_WEBHOOK_TIMEOUT")?;
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(ConfigError::new("MEDIA_WEBHOOK_TIMEOUT", "expected a duration from 1ms to 5m"));
        }
        let progress_interval = duration("MEDIA_NOTIFY_PROGRESS_INTERVAL")?;
        let concurrency = env.parse_with("MEDIA_WEBHOOK_CONCURRENCY", |raw| match raw.parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => Ok(n),
            _ => Err("expected a whole number from 1 to 256".to_string()),
        })?;
        let targets = AwsTargets::parse(&env, aws, !secrets.is_empty())?;
        Ok(NotifySettings {
            endpoints,
            secrets,
            schedule,
            timeout,
            concurrency,
            policy,
            progress_interval,
            queue_url: targets.queue_url,
            eventbridge_bus: targets.eventbridge_bus,
            eventbridge_source: targets.eventbridge_source,
            sns_topic_arn: targets.sns_topic_arn,
        })
    }
}

/// `;`-separated entries, each a URL the guard accepts and an optional list of event types.
fn parse_endpoints(raw: &str, guard: &Guard) -> Result<Vec<Endpoint>, String> {
    let mut endpoints = Vec::new();
    for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.split_whitespace();
        let url = parts.next().unwrap_or_default().to_string();
        guard.check_url(&url).map_err(|e| format!("`{url}`: {e}"))?;
        let types = match parts.next() {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<EventType>())
                .collect::<Result<Vec<_>, _>>()?,
        };
        if parts.next().is_some() {
            return Err(format!("`{entry}`: expected a URL and an optional list of types"));
        }
        endpoints.push(Endpoint { url, types });
    }
    Ok(endpoints)
}

/// Comma-separated delays, one per attempt.
fn parse_schedule(raw: &str) -> Result<Vec<Duration>, String> {
    let schedule = raw
        .split(',')
        .map(|d| humantime::parse_duration(d.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("expected durations such as 0s,5s,5m: {e}"))?;
    if schedule.is_empty() || schedule.len() > 50 {
        return Err("expected 1 to 50 delays".into());
    }
    Ok(schedule)
}

/// Where events go besides webhooks, and the queue that carries them on AWS.
struct AwsTargets {
    queue_url: Option<String>,
    eventbridge_bus: Option<String>,
    eventbridge_source: String,
    sns_topic_arn: Option<String>,
}

impl AwsTargets {
    /// `webhooks`: whether webhooks are configured, which also need the queue on AWS.
    fn parse(env: &Env, aws: bool, webhooks: bool) -> Result<Self, ConfigError> {
        let targets = AwsTargets {
            queue_url: env.get("MEDIA_NOTIFY_QUEUE_URL"),
            eventbridge_bus: env.get("MEDIA_EVENTBRIDGE_BUS"),
            eventbridge_source: env.or_default("MEDIA_EVENTBRIDGE_SOURCE"),
            sns_topic_arn: env.get("MEDIA_SNS_TOPIC_ARN"),
        };
        let named =
            [("MEDIA_EVENTBRIDGE_BUS", &targets.eventbridge_bus), ("MEDIA_SNS_TOPIC_ARN", &targets.sns_topic_arn)];
        if !aws && let Some(var) = named.into_iter().find_map(|(var, v)| v.is_some().then_some(var)) {
            return Err(ConfigError::new(var, "needs the aws backend"));
        }
        let anything = webhooks || targets.eventbridge_bus.is_some() || targets.sns_topic_arn.is_some();
        if aws && anything && targets.queue_url.is_none() {
            return Err(ConfigError::new(
                "MEDIA_NOTIFY_QUEUE_URL",
                "is required on the aws backend when notifications are set",
            ));
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)], aws: bool) -> Result<NotifySettings, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        NotifySettings::from_lookup(&|name| map.get(name).cloned(), aws)
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn defaults_are_off_and_follow_the_standard_schedule() {
        let s = settings(&[], true).unwrap();
        assert!(!s.enabled());
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            s.schedule,
            vec![
                Duration::ZERO,
                Duration::from_secs(5),
                minutes(5),
                minutes(30),
                minutes(120),
                minutes(300),
                minutes(600),
                minutes(600)
            ]
        );
        assert!(!s.policy.allow_loopback);
    }

    #[test]
    fn endpoints_with_types() {
        let s = settings(
            &[
                ("MEDIA_WEBHOOK_URLS", "https://a.example/h job.completed,job.failed; https://b.example/all"),
                ("MEDIA_WEBHOOK_SECRET", SECRET),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.endpoints.len(), 2);
        assert!(s.endpoints[0].wants(EventType::Completed) && !s.endpoints[0].wants(EventType::Progress));
        assert!(s.endpoints[1].wants(EventType::Progress));
        assert!(format!("{s:?}").contains("set") && !format!("{s:?}").contains("MfKQ"));
    }

    #[test]
    fn malformed_values_name_their_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("MEDIA_WEBHOOK_URLS", "https://a.example/")], "MEDIA_WEBHOOK_SECRET"),
            (&[("MEDIA_WEBHOOK_URLS", "http://a.example/"), ("MEDIA_WEBHOOK_SECRET", SECRET)], "MEDIA_WEBHOOK_URLS"),
            (
                &[("MEDIA_WEBHOOK_URLS", "https://a.example/ job.nope"), ("MEDIA_WEBHOOK_SECRET", SECRET)],
                "MEDIA_WEBHOOK_URLS",
            ),
            (&[("MEDIA_WEBHOOK_SECRET", "plain")], "MEDIA_WEBHOOK_SECRET"),
            (&[("MEDIA_WEBHOOK_RETRY_SCHEDULE", "0s,soon")], "MEDIA_WEBHOOK_RETRY_SCHEDULE"),
            (&[("MEDIA_WEBHOOK_TIMEOUT", "0s")], "MEDIA_WEBHOOK_TIMEOUT"),
            (&[("MEDIA_WEBHOOK_ALLOW_LOOPBACK", "maybe")], "MEDIA_WEBHOOK_ALLOW_LOOPBACK"),
            (&[("MEDIA_WEBHOOK_CONCURRENCY", "0")], "MEDIA_WEBHOOK_CONCURRENCY"),
        ];
        for (pairs, var) in cases {
            assert_eq!(settings(pairs, false).unwrap_err().var, *var, "{pairs:?}");
        }
        // The aws backend needs its queue once anything is configured.
        assert_eq!(settings(&[("MEDIA_WEBHOOK_SECRET", SECRET)], true).unwrap_err().var, "MEDIA_NOTIFY_QUEUE_URL");
        assert!(settings(&[("MEDIA_WEBHOOK_SECRET", SECRET)], false).is_ok());
        assert_eq!(
            settings(&[("MEDIA_SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:t")], true).unwrap_err().var,
            "MEDIA_NOTIFY_QUEUE_URL"
        );
        assert_eq!(settings(&[("MEDIA_EVENTBRIDGE_BUS", "b")], false).unwrap_err().var, "MEDIA_EVENTBRIDGE_BUS");
        let s = settings(&[("MEDIA_EVENTBRIDGE_BUS", "b"), ("MEDIA_NOTIFY_QUEUE_URL", "q")], true).unwrap();
        assert!(s.enabled() && !s.webhooks() && s.aws_fan_out());
        assert_eq!(s.eventbridge_source, "media-worker");
    }

    #[test]
    fn every_variable_is_in_env_example_and_help() {
        crate::config::assert_documented(NOTIFY_VARIABLES, &crate::config::variables_help());
    }
}
