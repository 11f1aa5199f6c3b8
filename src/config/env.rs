//! `${VAR}` / `${VAR:-default}` / `$$` substitution over the string scalars of a parsed YAML
//! tree (DESIGN section 6).
//!
//! Not on the hot path: runs once per config load. Cost: one walk of the tree and one new
//! `String` per scalar that contains a `$`; others are left untouched.
//!
//! Substituting after parsing, not in the raw text, is deliberate: a secret containing `#`,
//! `: `, quotes or a newline cannot turn into a comment, a new key or a syntax error. Mapping
//! keys are never substituted. The substituted text is not re-scanned, so a value taken from
//! the environment may contain `$` or `${` literally.

use std::collections::HashSet;

use serde_yaml::Value;

use super::decode::{child, index};
use super::ConfigError;

/// What substitution did to the tree, for the decoder.
#[derive(Debug, Default)]
pub(super) struct Substitution {
    /// One error per scalar whose substitution failed (unset variable, bad syntax).
    pub errors: Vec<ConfigError>,
    /// Paths of those scalars: the decoder treats them as already-failed and adds no
    /// follow-on errors (such as `required`).
    pub failed: HashSet<String>,
    /// Paths of scalars that took text from the environment: error messages must not echo
    /// their value (it may be a secret put under the wrong key).
    pub from_env: HashSet<String>,
}

/// Substitutes every string scalar in `root` in place, reading variables through `env`.
pub(super) fn substitute_tree(
    root: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Substitution {
    let mut out = Substitution::default();
    walk(root, "", env, &mut out);
    out
}

fn walk(v: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>, out: &mut Substitution) {
    match v {
        Value::String(s) => {
            if !s.contains('$') {
                return;
            }
            match expand(s, env) {
                Ok((text, used_env)) => {
                    if used_env {
                        out.from_env.insert(path.to_string());
                    }
                    *s = text;
                }
                Err(message) => {
                    out.errors.push(ConfigError::new(path, message));
                    out.failed.insert(path.to_string());
                }
            }
        }
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                walk(item, &index(path, i), env, out);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    // Non-string keys are reported by the decoder; keep a readable path.
                    other => super::decode::describe_key(other),
                };
                walk(item, &child(path, &key), env, out);
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, env, out),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expands one scalar. Returns the new text and whether any `${...}` was read from `env`
/// (a `${VAR:-default}` that fell back to its default still counts: the operator chose to
/// source it from the environment). Errors name the variable; they never contain values.
pub(super) fn expand(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(s.len());
    let mut used_env = false;
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let end = body_and_tail.find('}').ok_or_else(|| {
                "unterminated \"${\" (write \"$$\" for a literal \"$\")".to_string()
            })?;
            let body = &body_and_tail[..end];
            let (name, default) = match body.find(":-") {
                Some(i) => (&body[..i], Some(&body[i + 2..])),
                None => (body, None),
            };
            if !is_var_name(name) {
                return Err(format!(
                    "invalid variable name {name:?} in \"${{...}}\" (letters, digits and '_', not starting with a digit)"
                ));
            }
            used_env = true;
            match (env(name), default) {
                (Some(value), Some(d)) if value.is_empty() => out.push_str(d),
                (Some(value), _) => out.push_str(&value),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (use ${{{name}:-default}} to give a default)"
                    ))
                }
            }
            rest = &body_and_tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, used_env))
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            "SPECIAL" => Some("a#b: 'c\" ${X} $$".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_escapes() {
        assert_eq!(expand("${SET}", &env).unwrap(), ("value".into(), true));
        assert_eq!(expand("x-${SET}-y", &env).unwrap().0, "x-value-y");
        assert_eq!(
            expand("${UNSET:-dflt}", &env).unwrap(),
            ("dflt".into(), true)
        );
        assert_eq!(expand("${EMPTY:-dflt}", &env).unwrap().0, "dflt");
        assert_eq!(expand("${EMPTY}", &env).unwrap().0, "");
        assert_eq!(expand("${UNSET:-}", &env).unwrap().0, "");
        assert_eq!(expand("${SET:-dflt}", &env).unwrap().0, "value");
        assert_eq!(expand("a:-b ${UNSET:-x:-y}", &env).unwrap().0, "a:-b x:-y");
        assert_eq!(expand("pa$$word", &env).unwrap(), ("pa$word".into(), false));
        assert_eq!(expand("$$${SET}", &env).unwrap().0, "$value");
        assert_eq!(expand("cost $5 $", &env).unwrap().0, "cost $5 $");
    }

    #[test]
    fn env_value_is_not_rescanned() {
        assert_eq!(expand("${SPECIAL}", &env).unwrap().0, "a#b: 'c\" ${X} $$");
    }

    #[test]
    fn errors_name_the_variable() {
        let e = expand("${NOPE}", &env).unwrap_err();
        assert!(e.contains("NOPE") && e.contains("not set"), "{e}");
        assert!(expand("${SET", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${1X}", &env)
            .unwrap_err()
            .contains("invalid variable name"));
        assert!(expand("${}", &env)
            .unwrap_err()
            .contains("invalid variable name"));
    }

    #[test]
    fn tree_walk_records_paths() {
        let mut v: Value =
            serde_yaml::from_str("a: {b: [x, '${SET}', '${NOPE}']}\nc: ${UNSET:-1}\nd: 5\n")
                .unwrap();
        let s = substitute_tree(&mut v, &env);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].path, "a.b[2]");
        assert!(s.failed.contains("a.b[2]"));
        assert!(s.from_env.contains("a.b[1]") && s.from_env.contains("c"));
        assert!(!s.from_env.contains("a.b[0]"));
        assert_eq!(v["a"]["b"][1], Value::String("value".into()));
        assert_eq!(v["c"], Value::String("1".into()));
    }
}
