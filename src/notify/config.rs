//! Notification settings, in their own table ([`NOTIFY_VARIABLES`]) that `--help` prints and
//! `.env.example` mirrors, read by the worker, the API and the CLI alike.

use std::time::Duration;

use super::event::EventType;
use super::sign::Secrets;
use crate::config::{ConfigError, Variable};
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

    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>, aws: bool) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let value = |name: &'static str| get(name).unwrap_or_else(|| default_of(name).to_string());
        let error = |var: &'static str, message: String| ConfigError { var, message };

        let secrets = Secrets::parse(&value("MEDIA_WEBHOOK_SECRET")).map_err(|m| error("MEDIA_WEBHOOK_SECRET", m))?;
        let allow_loopback = match value("MEDIA_WEBHOOK_ALLOW_LOOPBACK").to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            other => {
                return Err(error("MEDIA_WEBHOOK_ALLOW_LOOPBACK", format!("expected true or false, got `{other}`")));
            }
        };
        let policy = Policy { allow_loopback };
        let guard = Guard::new(policy);
        let mut endpoints = Vec::new();
        for entry in value("MEDIA_WEBHOOK_URLS").split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.split_whitespace();
            let url = parts.next().unwrap_or_default().to_string();
            guard.check_url(&url).map_err(|e| error("MEDIA_WEBHOOK_URLS", format!("`{url}`: {e}")))?;
            let types = match parts.next() {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<EventType>().map_err(|e| error("MEDIA_WEBHOOK_URLS", e)))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if parts.next().is_some() {
                return Err(error(
                    "MEDIA_WEBHOOK_URLS",
                    format!("`{entry}`: expected a URL and an optional list of types"),
                ));
            }
            endpoints.push(Endpoint { url, types });
        }
        if !endpoints.is_empty() && secrets.is_empty() {
            return Err(error("MEDIA_WEBHOOK_SECRET", "is required with MEDIA_WEBHOOK_URLS".into()));
        }
        let schedule = value("MEDIA_WEBHOOK_RETRY_SCHEDULE")
            .split(',')
            .map(|d| humantime::parse_duration(d.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error("MEDIA_WEBHOOK_RETRY_SCHEDULE", format!("expected durations such as 0s,5s,5m: {e}")))?;
        if schedule.is_empty() || schedule.len() > 50 {
            return Err(error("MEDIA_WEBHOOK_RETRY_SCHEDULE", "expected 1 to 50 delays".into()));
        }
        let duration = |name: &'static str| {
            humantime::parse_duration(&value(name)).map_err(|e| error(name, format!("expected a duration: {e}")))
        };
        let timeout = duration("MEDIA_WEBHOOK_TIMEOUT")?;
        if timeout.is_zero() || timeout > Duration::from_secs(300) {
            return Err(error("MEDIA_WEBHOOK_TIMEOUT", "expected a duration from 1ms to 5m".into()));
        }
        let progress_interval = duration("MEDIA_NOTIFY_PROGRESS_INTERVAL")?;
        let concurrency = match value("MEDIA_WEBHOOK_CONCURRENCY").parse::<usize>() {
            Ok(n) if (1..=256).contains(&n) => n,
            _ => return Err(error("MEDIA_WEBHOOK_CONCURRENCY", "expected a whole number from 1 to 256".into())),
        };
        let queue_url = get("MEDIA_NOTIFY_QUEUE_URL");
        let eventbridge_bus = get("MEDIA_EVENTBRIDGE_BUS");
        let eventbridge_source = value("MEDIA_EVENTBRIDGE_SOURCE");
        let sns_topic_arn = get("MEDIA_SNS_TOPIC_ARN");
        if !aws
            && let Some(var) = [("MEDIA_EVENTBRIDGE_BUS", &eventbridge_bus), ("MEDIA_SNS_TOPIC_ARN", &sns_topic_arn)]
                .into_iter()
                .find_map(|(var, v)| v.is_some().then_some(var))
        {
            return Err(error(var, "needs the aws backend".into()));
        }
        let anything = !secrets.is_empty() || eventbridge_bus.is_some() || sns_topic_arn.is_some();
        if aws && anything && queue_url.is_none() {
            return Err(error(
                "MEDIA_NOTIFY_QUEUE_URL",
                "is required on the aws backend when notifications are set".into(),
            ));
        }
        Ok(NotifySettings {
            endpoints,
            secrets,
            schedule,
            timeout,
            concurrency,
            policy,
            progress_interval,
            queue_url,
            eventbridge_bus,
            eventbridge_source,
            sns_topic_arn,
        })
    }
}

fn default_of(name: &str) -> &'static str {
    NOTIFY_VARIABLES.iter().find(|v| v.name == name).map(|v| v.default).unwrap_or("")
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
