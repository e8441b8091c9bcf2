//! The Tera functions whose builtin form is unsafe for herd: `get_env`,
//! which would copy any variable of the process rendering (a CI secret
//! into an image's annotations or a unit), and `range`, unbounded.
//!
//! Templates rendered on the build host (manifests, unit templates, `herd
//! try`) read only variables the user passes on purpose, `HERD_ENV_<NAME>`
//! as build scripts get them: `get_env(name="PROXY")` reads
//! `HERD_ENV_PROXY`. The container init renders inside the container,
//! whose environment is its own, and says so once at its start with
//! [`read_container_environment`].

use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Prefix of the host variables build-time templates may read.
pub const HOST_PREFIX: &str = "HERD_ENV_";

/// Most items `range()` produces.
pub const MAX_RANGE: usize = 100_000;

/// Set by the init: this process is a container's, its environment is the
/// container's own. Process-wide on purpose: the choice is about which
/// process renders, not which template.
static CONTAINER: AtomicBool = AtomicBool::new(false);

/// Lets `get_env` read every variable: for the container init only.
pub fn read_container_environment() {
    CONTAINER.store(true, Ordering::Relaxed);
}

/// Replaces Tera's `get_env` and `range` in `tera`.
pub fn register(tera: &mut tera::Tera) {
    tera.register_function("get_env", get_env);
    tera.register_function("range", range);
}

fn get_env(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let Some(Value::String(name)) = args.get("name") else {
        return Err(tera::Error::msg(
            "`get_env` takes a `name`, the variable's name as a string",
        ));
    };
    let variable = if CONTAINER.load(Ordering::Relaxed) || name.starts_with(HOST_PREFIX) {
        name.clone()
    } else {
        format!("{HOST_PREFIX}{name}")
    };
    match std::env::var(&variable) {
        Ok(value) => Ok(Value::String(value)),
        Err(_) => match args.get("default") {
            Some(default) => Ok(default.clone()),
            None if CONTAINER.load(Ordering::Relaxed) => Err(tera::Error::msg(format!(
                "`get_env`: the environment variable `{variable}` is not set (give a `default`)"
            ))),
            None => Err(tera::Error::msg(format!(
                "`get_env(name=\"{name}\")`: {variable} is not set; templates herd renders on this machine read only variables passed as {HOST_PREFIX}<NAME> (give a `default` to make it optional)"
            ))),
        },
    }
}

fn range(args: &HashMap<String, Value>) -> tera::Result<Value> {
    let number = |key: &str, default: Option<u64>| -> tera::Result<u64> {
        match args.get(key) {
            Some(value) => value.as_u64().ok_or_else(|| {
                tera::Error::msg(format!(
                    "`range`: `{key}` is {value}; expected a number of 0 or more"
                ))
            }),
            None => default.ok_or_else(|| tera::Error::msg("`range` takes an `end`")),
        }
    };
    let start = number("start", Some(0))?;
    let end = number("end", None)?;
    let step = number("step_by", Some(1))?;
    if step == 0 {
        return Err(tera::Error::msg("`range`: `step_by` must be 1 or more"));
    }
    let count = end.saturating_sub(start).div_ceil(step);
    if count > MAX_RANGE as u64 {
        return Err(tera::Error::msg(format!(
            "`range` of {count} items; herd's templates take at most {MAX_RANGE}"
        )));
    }
    Ok(Value::Array(
        (start..end)
            .step_by(step as usize)
            .map(Value::from)
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn range_is_tera_s_and_bounded() {
        let args = |v: Value| serde_json::from_value::<HashMap<String, Value>>(v).unwrap();
        assert_eq!(range(&args(json!({"end": 3}))).unwrap(), json!([0, 1, 2]));
        assert_eq!(
            range(&args(json!({"start": 1, "end": 8, "step_by": 3}))).unwrap(),
            json!([1, 4, 7])
        );
        let err = range(&args(json!({"end": 1_000_000_000u64}))).unwrap_err();
        assert!(err.to_string().contains("at most 100000"), "{err}");
    }
}
