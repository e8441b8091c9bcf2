//! The `machines:` of an environment's `config.yml`: the named hosts
//! `herd deploy` places units on and reaches over SSH.

use crate::error::InputError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One host of the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Machine {
    /// Also its metadata `name` (`MachineMetadata=name=<name>`).
    pub name: String,
    /// How `ssh` reaches it: `[user@]host[:port]` or a `Host` alias of the
    /// ssh configuration.
    pub ssh: String,
    /// `key: value` pairs `MachineMetadata=` lines match.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// What `MachineID=` matches (fleet's machine id); the name when not
    /// given.
    #[serde(default)]
    pub machine_id: Option<String>,
}

/// Where `ssh` connects: the parts of `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshDestination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl Machine {
    /// The metadata as strings, with `name` added.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .metadata
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        out.insert("name".into(), self.name.clone());
        out
    }

    /// `ssh` split into user, host and port; checked when loading.
    pub fn destination(&self) -> SshDestination {
        parse_destination(&self.ssh).unwrap_or(SshDestination {
            user: None,
            host: self.ssh.clone(),
            port: None,
        })
    }
}

/// `[user@]host[:port]`, `[user@][v6]:port` or an alias. Refused: anything
/// `ssh` would read as an option (a leading `-`) and characters no host
/// name or alias has (spaces, quotes, control characters), which could
/// otherwise reach the ssh configuration's `%h` expansions.
pub fn parse_destination(text: &str) -> Result<SshDestination, String> {
    let (user, rest) = match text.rsplit_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, text),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: `[` without `]`"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{text:?}: expected `:PORT` after `]`")),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let word_ok = |w: &str| {
        !w.is_empty()
            && !w.starts_with('-')
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    };
    if let Some(user) = user
        && (!word_ok(user) || user.contains(':'))
    {
        return Err(format!(
            "{text:?}: the user must be letters, digits, `.`, `-`, `_`"
        ));
    }
    if !word_ok(host) || (host.contains(':') && !rest.starts_with('[')) {
        return Err(format!(
            "{text:?}: expected [user@]host[:port] or an ssh config Host alias (letters, digits, `.`, `-`, `_`; not starting with `-`)"
        ));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => Some(n),
            _ => return Err(format!("{text:?}: port {p:?} is not a number in 1-65535")),
        },
    };
    Ok(SshDestination {
        user: user.map(str::to_string),
        host: host.to_string(),
        port,
    })
}

/// Checks the machines of `config.yml` (`text` is its content, for lines):
/// names usable in file names and unique, SSH destinations, scalar
/// metadata.
pub fn check(machines: &[Machine], path: &Path, text: &str) -> Result<(), InputError> {
    let at = |needle: &str, message: String| InputError {
        line: super::line_of(text, needle),
        ..InputError::new(path, message)
    };
    let mut seen = std::collections::HashSet::new();
    for machine in machines {
        super::check_name(&machine.name).map_err(|e| {
            at(
                &machine.name,
                format!("machine name {:?}: {e}", machine.name),
            )
        })?;
        if !seen.insert(&machine.name) {
            return Err(at(
                &machine.name,
                format!("machine `{}` is listed twice", machine.name),
            ));
        }
        parse_destination(&machine.ssh)
            .map_err(|e| at(&machine.ssh, format!("machine `{}`: ssh {e}", machine.name)))?;
        for (key, value) in &machine.metadata {
            if key == "name" {
                return Err(at(
                    key,
                    format!(
                        "machine `{}`: metadata `name` is the machine's name; leave it out",
                        machine.name
                    ),
                ));
            }
            let scalar = matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_));
            let clean = |s: &str| !s.is_empty() && !s.contains(['=', ' ', '\t', '\n']);
            if !scalar || !clean(key) || !clean(&value.to_string().replace('"', "")) {
                return Err(at(
                    key,
                    format!(
                        "machine `{}`: metadata `{key}` must be a word, number or boolean without `=` or spaces",
                        machine.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_text(text: &str) -> Result<(), InputError> {
        let path = Path::new("env/prod/config.yml");
        let machines: Vec<Machine> = crate::yaml::parse(path, text)?;
        check(&machines, path, text)
    }

    #[test]
    fn machines_are_checked_with_their_line() {
        assert!(
            check_text("- {name: a, ssh: root@h:22, metadata: {rack: 101, ok: true}}\n").is_ok()
        );
        let err = check_text("- {name: a, ssh: h}\n- {name: a, ssh: h2}\n").unwrap_err();
        assert!(err.message.contains("machine `a` is listed twice"), "{err}");
        let err = check_text("- {name: a, ssh: h}\n- {name: b, ssh: 'h; rm -rf /'}\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        let err = check_text("- {name: a, ssh: h, metadata: {name: x}}\n").unwrap_err();
        assert!(err.message.contains("metadata `name`"), "{err}");
        let err = check_text("- {name: a, ssh: h, metadata: {rack: [1, 2]}}\n").unwrap_err();
        assert!(err.message.contains("metadata `rack`"), "{err}");
        let err = check_text("- {name: a, ssh: h, metdata: {}}\n").unwrap_err();
        assert!(err.message.contains("did you mean `metadata`?"), "{err}");
    }

    #[test]
    fn destinations_parse_and_options_are_refused() {
        let d = parse_destination("root@10.1.0.11:2222").unwrap();
        assert_eq!(d.user.as_deref(), Some("root"));
        assert_eq!(d.host, "10.1.0.11");
        assert_eq!(d.port, Some(2222));
        let d = parse_destination("db-alias").unwrap();
        assert_eq!((d.user, d.host.as_str(), d.port), (None, "db-alias", None));
        let d = parse_destination("[::1]:22").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", Some(22)));
        for bad in [
            "-oProxyCommand=x",
            "root@-x",
            "a b",
            "h:0",
            "h:99999",
            "h:2x",
            "",
            "h;rm",
            "u@",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
