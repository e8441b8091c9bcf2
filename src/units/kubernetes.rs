//! `--target kubernetes`: one Pod document per node, pinned to its host,
//! with fleet's machine metadata turned into node affinity; a service with
//! a timer becomes one CronJob per node instead.

use super::Unit;
use crate::error::InputError;
use anyhow::{Result, bail};
use base64::Engine;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The files of `unit`: its Pod, or with a timer (whose `OnCalendar=` is
/// `event`) its CronJob, and when some of its attributes are secret, a
/// Secret holding those (`<unit>.secret.yaml`, the only private file).
pub(super) fn files(unit: &Unit, event: Option<&CalendarEvent>) -> Result<super::MarkedFiles> {
    let attributes = Attributes::of(unit)?;
    let (object, name) = match event {
        Some(event) => cron_job(unit, event, &attributes)?,
        None => pod(unit, &attributes)?,
    };
    let mut files = vec![(
        unit.path("yaml"),
        document(unit, &object)?.into_bytes(),
        false,
    )];
    if let Some(secret) = &attributes.secret {
        let secret_name = secret_name(&name);
        if secret_name.len() > 253 {
            bail!(
                "{}: the Secret name {secret_name} is longer than the 253 characters Kubernetes allows",
                unit.service.manifest_path.display()
            );
        }
        let object = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name, "labels": object["metadata"]["labels"]},
            "type": "Opaque",
            "data": {SECRET_KEY: base64::engine::general_purpose::STANDARD.encode(secret)},
        });
        files.push((
            unit.path("secret.yaml"),
            document(unit, &object)?.into_bytes(),
            true,
        ));
    }
    Ok(files)
}

/// The key of a unit's Secret that holds its secret attributes (JSON).
const SECRET_KEY: &str = "attributes";

fn secret_name(object_name: &str) -> String {
    format!("{object_name}-attributes")
}

/// A unit's attributes as its Pod passes them: the public ones as a value,
/// the secret ones (if any) kept for a Secret.
struct Attributes<'a> {
    public_base64: std::borrow::Cow<'a, str>,
    secret: Option<String>,
}

impl<'a> Attributes<'a> {
    fn of(unit: &'a Unit) -> Result<Attributes<'a>> {
        let has_secrets = unit.service.has_secrets
            || crate::attributes::secrets::map_has_secrets(&unit.node.attributes);
        if !has_secrets {
            return Ok(Attributes {
                public_base64: unit.attributes_base64.as_str().into(),
                secret: None,
            });
        }
        let value: Value = serde_json::from_str(&unit.attributes_json)?;
        let (public, secret) = crate::attributes::secrets::split(&value);
        Ok(Attributes {
            public_base64: base64::engine::general_purpose::STANDARD
                .encode(public.to_string())
                .into(),
            secret: Some(secret.to_string()),
        })
    }

    /// The containers' environment entries for the attributes: the public
    /// ones in `HERD_ATTRIBUTES`, the secret ones in `HERD_ATTRIBUTES_0`
    /// from the Secret (the init merges both; they share no attribute).
    fn env(&self, object_name: &str) -> Vec<Value> {
        let mut env = vec![
            json!({"name": "HERD_ATTRIBUTES", "value": format!("base64,{}", self.public_base64)}),
        ];
        if self.secret.is_some() {
            env.push(json!({"name": "HERD_ATTRIBUTES_COUNT", "value": "1"}));
            env.push(json!({"name": "HERD_ATTRIBUTES_0", "valueFrom": {"secretKeyRef": {"name": secret_name(object_name), "key": SECRET_KEY}}}));
        }
        env
    }
}

/// The Pod for `unit`, and its name.
fn pod(unit: &Unit, attributes: &Attributes) -> Result<(Value, String)> {
    let (name, labels) = identity(unit, "Pod", 253)?;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": pod_spec(unit, "Always", &attributes.env(&name)),
    });
    Ok((pod, name))
}

/// The one `OnCalendar=` of a unit's timer, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CalendarEvent {
    pub expression: String,
    /// The timer's template.
    pub template: PathBuf,
    pub line: EventLine,
}

/// The 1-based line of an `OnCalendar=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventLine {
    /// In the timer's template.
    Template(usize),
    /// In the timer rendered from the template, where the template's own
    /// line cannot be told (an included partial wrote it, or several of
    /// the template's lines could have).
    Rendered(usize),
}

/// The CronJob for `unit`, a service with a timer whose `OnCalendar=` is
/// `event` (see [`cron_schedule`]): each run is a Job whose Pod is pinned
/// like a service's.
fn cron_job(
    unit: &Unit,
    event: &CalendarEvent,
    attributes: &Attributes,
) -> Result<(Value, String)> {
    // A CronJob's name becomes its Jobs' names plus 11 characters, and a
    // Job's name is at most 63 characters long.
    let (name, labels) = identity(unit, "CronJob", 52)?;
    let schedule = cron_schedule(&event.expression).map_err(|why| {
        let (unit, expression) = (&unit.name, &event.expression);
        match event.line {
            EventLine::Template(line) => InputError::at(
                &event.template,
                line,
                format!("the timer of {unit} has OnCalendar={expression}, which {why}"),
            ),
            EventLine::Rendered(line) => InputError::new(
                &event.template,
                format!(
                    "the timer rendered for {unit} has OnCalendar={expression} on its line {line}, which {why}"
                ),
            ),
        }
    })?;
    let mut spec = json!({
        "schedule": schedule.cron,
        // systemd's timers do not start a run while the last one is active.
        "concurrencyPolicy": "Forbid",
        "jobTemplate": {
            "metadata": {"labels": labels},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": pod_spec(unit, "OnFailure", &attributes.env(&name))}},
        },
    });
    if let Some(zone) = schedule.time_zone {
        spec["timeZone"] = json!(zone);
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    });
    Ok((job, name))
}

/// The name (the unit's, as a DNS name) and labels of the object of
/// `kind` made for `unit`, whose name Kubernetes takes up to `max_name`
/// characters long.
fn identity(unit: &Unit, kind: &str, max_name: usize) -> Result<(String, Value)> {
    let service = unit.service;
    let hostname = &unit.node.hostname;
    if hostname.len() > 63 {
        bail!(
            "{}: hostname {hostname} is longer than the 63 characters of a Kubernetes label value",
            service.manifest_path.display()
        );
    }
    let name = unit.name.to_ascii_lowercase().replace('_', "-");
    if name.len() > max_name {
        bail!(
            "{}: the {kind} name {name} is longer than the {max_name} characters Kubernetes allows",
            service.manifest_path.display()
        );
    }
    let labels = json!({
        "app.kubernetes.io/name": service.name,
        "app.kubernetes.io/part-of": unit.env.config.env_name,
        "app.kubernetes.io/managed-by": "herd",
    });
    Ok((name, labels))
}

/// What the service's Pod runs on its node: its images with the attributes
/// in their environment, its volumes, pinned to the node's host.
fn pod_spec(unit: &Unit, restart_policy: &str, attributes_env: &[Value]) -> Value {
    let service = unit.service;
    let volume_mounts: Vec<Value> = service
        .mount_points
        .iter()
        .map(|m| json!({"name": dns_label(&m.name), "mountPath": m.path, "readOnly": m.read_only}))
        .collect();
    let containers: Vec<Value> = unit
        .images
        .iter()
        .map(|image| {
            let mut env = attributes_env.to_vec();
            env.push(
                json!({"name": "HERD_STOP_TIMEOUT", "value": service.stop_timeout.to_string()}),
            );
            let mut container = json!({
                "name": dns_label(&image.app),
                "image": image.reference,
                "env": env,
                "volumeMounts": volume_mounts,
                "readinessProbe": readiness_probe(&image.lifecycle),
            });
            image.resources.kubernetes(&mut container);
            container
        })
        .collect();
    let volumes: Vec<Value> = service
        .mount_points
        .iter()
        .map(|m| json!({"name": dns_label(&m.name), "hostPath": {"path": m.from, "type": "DirectoryOrCreate"}}))
        .collect();
    let mut spec = json!({
        "nodeSelector": {"kubernetes.io/hostname": unit.node.hostname},
        "restartPolicy": restart_policy,
        // Kubernetes sends SIGTERM, waits this long, then kills: the same
        // graceful stop the systemd unit gives podman. The init drains the
        // app on SIGTERM, so no preStop hook is needed.
        "terminationGracePeriodSeconds": service.stop_timeout,
        "containers": containers,
        "volumes": volumes,
    });
    if let Some(terms) = node_affinity(&unit.name, &unit.node.fleet) {
        spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": terms}]}}});
    }
    spec
}

/// The init's own ready check, run as often as the image's readiness
/// command (every 5 s when the image has none, or without a store): the
/// Pod leaves its Services' endpoints while it drains, as the ready file
/// goes at the stop request.
pub fn readiness_probe(lifecycle: &crate::lifecycle::Lifecycle) -> Value {
    let period = lifecycle
        .readiness
        .as_ref()
        .map_or(5, |r| r.interval.ceil_seconds().max(1));
    json!({
        "exec": {"command": [format!("/{}", crate::image_paths::INIT), "ready"]},
        "periodSeconds": period,
        "failureThreshold": 1,
    })
}

fn document(unit: &Unit, object: &Value) -> Result<String> {
    let yaml = serde_yaml_ng::to_string(object)?;
    Ok(format!(
        "# Generated by herd from environment {}, service {}: change the environment, not this file.\n{yaml}",
        unit.env.config.env_name, unit.service.name
    ))
}

/// A systemd calendar expression as a cron schedule.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Schedule {
    pub cron: String,
    /// An explicit time zone of the expression (`... Europe/Paris`).
    pub time_zone: Option<String>,
}

/// Translates the `OnCalendar=` expressions cron can express (written by
/// hand: no crate converts systemd calendar events). Accepted: the
/// shorthands (`daily`, `weekly`, ...), and `[weekdays] [*-MM-DD] HH:MM[:00]
/// [zone]` where each field is `*`, a number, a list `a,b`, a range
/// `a..b` or a repetition `a/n`. Seconds must be 0 (cron has none), and
/// the year `*`. The error says what cannot be expressed.
pub(super) fn cron_schedule(on_calendar: &str) -> Result<Schedule, String> {
    let shorthand = match on_calendar.trim() {
        "minutely" => Some("* * * * *"),
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * 1"),
        "monthly" => Some("0 0 1 * *"),
        "quarterly" => Some("0 0 1 1,4,7,10 *"),
        "semiannually" => Some("0 0 1 1,7 *"),
        "yearly" | "annually" => Some("0 0 1 1 *"),
        _ => None,
    };
    if let Some(cron) = shorthand {
        return Ok(Schedule {
            cron: cron.into(),
            time_zone: None,
        });
    }
    let mut words: Vec<&str> = on_calendar.split_whitespace().collect();
    let time_zone = match words.last() {
        Some(last) if last.contains('/') && !last.contains(':') || *last == "UTC" => {
            let zone = last.to_string();
            words.pop();
            Some(zone)
        }
        _ => None,
    };
    let mut weekdays = "*".to_string();
    let mut date = None;
    let mut time = None;
    for word in words {
        if word.contains(':') {
            time = Some(word);
        } else if word.contains('-') && word.starts_with(|c: char| c.is_ascii_digit() || c == '*') {
            date = Some(word);
        } else if time.is_none() && date.is_none() && weekdays == "*" {
            weekdays = cron_weekdays(word)?;
        } else {
            return Err(format!("has {word:?} where a date or time was expected"));
        }
    }
    let (month, day) = match date {
        None => ("*".to_string(), "*".to_string()),
        Some(date) => match date.split('-').collect::<Vec<_>>()[..] {
            ["*", month, day] => (cron_field(month, 1, 12)?, cron_field(day, 1, 31)?),
            [month, day] => (cron_field(month, 1, 12)?, cron_field(day, 1, 31)?),
            [_, _, _] => return Err("names a year (cron has no years); expected *-MM-DD".into()),
            _ => return Err(format!("has the date {date:?}; expected *-MM-DD")),
        },
    };
    let Some(time) = time else {
        return Err("has no time of day; expected HH:MM".into());
    };
    let (hour, minute) = match time.split(':').collect::<Vec<_>>()[..] {
        [hour, minute] => (hour, minute),
        [hour, minute, second] if second.trim_start_matches('0').is_empty() => (hour, minute),
        [_, _, _] => {
            return Err(
                "runs at seconds other than 0 (cron has no seconds); expected HH:MM or HH:MM:00"
                    .into(),
            );
        }
        _ => return Err(format!("has the time {time:?}; expected HH:MM[:SS]")),
    };
    Ok(Schedule {
        cron: format!(
            "{} {} {day} {month} {weekdays}",
            cron_field(minute, 0, 59)?,
            cron_field(hour, 0, 23)?
        ),
        time_zone,
    })
}

/// One numeric field: `*`, `n`, `a,b`, `a..b`, `a/n`, `*/n`.
fn cron_field(field: &str, min: u32, max: u32) -> Result<String, String> {
    let number = |text: &str| -> Result<u32, String> {
        text.parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| format!("has {text:?} where a number from {min} to {max} was expected"))
    };
    let part = |part: &str| -> Result<String, String> {
        if part == "*" {
            return Ok("*".into());
        }
        if let Some((start, step)) = part.split_once('/') {
            let start = if start == "*" {
                "*".to_string()
            } else {
                number(start)?.to_string()
            };
            let step =
                step.parse::<u32>().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("has the repetition {part:?}; expected a/n with n > 0")
                })?;
            return Ok(format!("{start}/{step}"));
        }
        if let Some((from, to)) = part.split_once("..") {
            return Ok(format!("{}-{}", number(from)?, number(to)?));
        }
        Ok(number(part)?.to_string())
    };
    Ok(field
        .split(',')
        .map(part)
        .collect::<Result<Vec<_>, _>>()?
        .join(","))
}

/// `Mon`, `Mon,Wed`, `Mon..Fri` as cron's 0-6 (Sunday 0).
fn cron_weekdays(word: &str) -> Result<String, String> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    // systemd takes the English names, whole or their first three letters.
    let day = |name: &str| -> Result<usize, String> {
        let lower = name.to_ascii_lowercase();
        DAYS.iter()
            .position(|full| *full == lower || (lower.len() == 3 && full.starts_with(&lower)))
            .ok_or_else(|| format!("has {name:?} where a weekday (Mon..Sun) was expected"))
    };
    word.split(',')
        .map(|part| match part.split_once("..") {
            Some((from, to)) => Ok(format!("{}-{}", day(from)?, day(to)?)),
            None => Ok(day(part)?.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|parts| parts.join(","))
}

/// fleet's `MachineMetadata=key=value` lines as node affinity: lines are
/// all required, several values for one key are alternatives, as in fleet.
/// Keys fleet has but Kubernetes has no equivalent for are left out with a
/// warning.
fn node_affinity(unit: &str, fleet: &[String]) -> Option<Vec<Value>> {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in fleet {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        if key.trim() != "MachineMetadata" {
            tracing::warn!("{unit}: fleet line {line:?} has no Kubernetes equivalent; left out");
            continue;
        }
        // `MachineMetadata="a=b" "c=d"` and `MachineMetadata=a=b c=d` both hold pairs.
        for pair in value.split_whitespace().map(|p| p.trim_matches('"')) {
            match pair.split_once('=') {
                Some((k, v)) if is_label_key(k) && is_label_value(v) => {
                    let values = wanted.entry(k.to_string()).or_default();
                    if !values.iter().any(|x| x == v) {
                        values.push(v.to_string());
                    }
                }
                _ => tracing::warn!(
                    "{unit}: fleet metadata {pair:?} is not a valid Kubernetes label; left out"
                ),
            }
        }
    }
    if wanted.is_empty() {
        return None;
    }
    Some(
        wanted
            .into_iter()
            .map(|(key, values)| {
                Value::Object(Map::from_iter([
                    ("key".into(), json!(key)),
                    ("operator".into(), json!("In")),
                    ("values".into(), json!(values)),
                ]))
            })
            .collect(),
    )
}

/// `[prefix/]name`, name as a label value (non-empty), prefix a DNS name.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    !name.is_empty()
        && is_label_value(name)
        && (prefix.is_empty()
            || (prefix.len() <= 253
                && prefix
                    .split('.')
                    .all(|p| !p.is_empty() && p == dns_label(p))))
}

/// At most 63 of letters, digits, `-`, `_`, `.`, starting and ending with a
/// letter or digit (or empty).
fn is_label_value(value: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge(value.chars().next())
        && edge(value.chars().next_back())
}

/// A DNS-1123 label (container and volume names): lowercase letters,
/// digits and `-`, at most 63.
fn dns_label(name: &str) -> String {
    let mapped: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches('-');
    trimmed[..trimmed.len().min(63)]
        .trim_end_matches('-')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_metadata_becomes_required_node_affinity() {
        let fleet = vec![
            "MachineMetadata=name=r101-srv1".to_string(),
            "MachineMetadata=\"rack=r1\" \"name=r102-srv1\"".to_string(),
            "Conflicts=x*".to_string(),
        ];
        let terms = node_affinity("u", &fleet).unwrap();
        assert_eq!(
            Value::Array(terms),
            json!([
                {"key": "name", "operator": "In", "values": ["r101-srv1", "r102-srv1"]},
                {"key": "rack", "operator": "In", "values": ["r1"]},
            ])
        );
        assert_eq!(node_affinity("u", &["Global=true".to_string()]), None);
    }

    #[test]
    fn calendar_events_become_cron_schedules() {
        let cron = |e: &str| cron_schedule(e).map(|s| s.cron);
        assert_eq!(cron("daily").unwrap(), "0 0 * * *");
        assert_eq!(cron("weekly").unwrap(), "0 0 * * 1");
        assert_eq!(cron("*-*-* 03:00:00").unwrap(), "0 3 * * *");
        assert_eq!(cron("Mon..Fri 02:30").unwrap(), "30 2 * * 1-5");
        assert_eq!(
            cron("Sat,Sun *-*-1,15 4:0/15").unwrap(),
            "0/15 4 1,15 * 6,0"
        );
        assert_eq!(cron("*-06-* *:00").unwrap(), "0 * * 6 *");
        assert_eq!(
            cron_schedule("*-*-* 01:00 Europe/Paris").unwrap(),
            Schedule {
                cron: "0 1 * * *".into(),
                time_zone: Some("Europe/Paris".into())
            }
        );
        for (bad, why) in [
            ("*-*-* 03:00:30", "seconds"),
            ("2027-*-* 03:00", "year"),
            ("Funday 03:00", "weekday"),
            ("*-*-* 25:00", "0 to 23"),
            ("*-*-*", "no time"),
        ] {
            let err = cron_schedule(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    /// The error of `herd gen --target kubernetes` for an environment of
    /// `files` (paths below its directory), and where the environment is.
    fn gen_error(files: &[(&str, &str)]) -> (tempfile::TempDir, anyhow::Error) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let env = crate::environments::Environment::load(dir.path()).unwrap();
        let error =
            super::super::generate(&env, super::super::Target::Kubernetes, None).unwrap_err();
        (dir, error)
    }

    const MANIFEST: &str = "services/db/service-manifest.yml";
    const TIMER: &str = "services/db/unit.timer.tmpl";

    fn one_node(hostname: &str) -> String {
        format!("containers: [aci.example.com/db:1]\nnodes:\n  - hostname: {hostname}\n")
    }

    #[test]
    fn a_name_too_long_names_the_kind_of_object_and_its_limit() {
        let config = format!("envName: {}\n", "e".repeat(250));
        let (_dir, error) = gen_error(&[("config.yml", &config), (MANIFEST, &one_node("h1"))]);
        let error = error.to_string();
        assert!(
            error.contains("service-manifest.yml: the Pod name eee")
                && error.contains("longer than the 253 characters"),
            "{error}"
        );

        let (_dir, error) = gen_error(&[
            ("config.yml", "envName: prod\n"),
            (MANIFEST, &one_node(&"h".repeat(50))),
            (TIMER, "[Timer]\nOnCalendar=daily\n"),
        ]);
        let error = error.to_string();
        assert!(
            error.contains("service-manifest.yml: the CronJob name prod-db-hhh")
                && error.contains("longer than the 52 characters"),
            "{error}"
        );
        assert!(!error.contains("Pod"), "{error}");
    }

    #[test]
    fn an_on_calendar_cron_cannot_express_names_its_line() {
        let files = |timer| {
            gen_error(&[
                ("config.yml", "envName: prod\n"),
                (MANIFEST, &one_node("h1")),
                ("templates/head.partial", "# one\n# two\n# three\n"),
                (
                    "templates/timer.partial",
                    "[Timer]\nOnCalendar=*-*-* 03:00:30\n",
                ),
                (TIMER, timer),
            ])
        };
        // The template's line, not the rendered timer's (where the partial
        // adds three lines before it).
        let (dir, error) = files(
            "{% include \"head.partial\" -%}\n{% set at = \"*-*-* 03:00:30\" -%}\n[Unit]\n\n[Timer]\nOnCalendar={{ at }}\n",
        );
        let error = error.downcast::<InputError>().unwrap();
        assert_eq!(error.file, dir.path().join(TIMER));
        assert_eq!(error.line, Some(6), "{error}");
        assert_eq!(
            error.message,
            "the timer of prod_db_h1 has OnCalendar=*-*-* 03:00:30, which runs at seconds \
             other than 0 (cron has no seconds); expected HH:MM or HH:MM:00"
        );
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:6: ", dir.path().join(TIMER).display())),
            "{error}"
        );

        // Written by a partial: the template has no such line, so the
        // rendered timer's line is given.
        let (dir, error) = files("[Unit]\nDescription=backup\n{% include \"timer.partial\" %}\n");
        let error = error.downcast::<InputError>().unwrap();
        assert_eq!(error.file, dir.path().join(TIMER));
        assert_eq!(error.line, None, "{error}");
        assert!(
            error.message.starts_with(
                "the timer rendered for prod_db_h1 has OnCalendar=*-*-* 03:00:30 on its line 4, which runs at seconds"
            ),
            "{error}"
        );
    }

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(dns_label("pod-mysql_mariadb"), "pod-mysql-mariadb");
        assert_eq!(dns_label("_X.y_"), "x-y");
        assert!(is_label_key("topology.kubernetes.io/zone"));
        assert!(!is_label_key("bad key"));
    }
}
