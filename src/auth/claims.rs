//! The claims rules of a bucket (`jwt.claims`, DESIGN section 6): `equals`, `not_equals`,
//! `in`, `contains`, `exists` on a claim name or dotted path, all of which must hold.
//!
//! Hot path only on a token-cache miss (a hit reuses the cached decision). Cost: per rule one
//! walk down the claims object (a map probe per path segment), no allocation unless the rule
//! fails (then one `String` naming it).

use serde_json::Value;

use crate::config::{ClaimOperator, ClaimRule};

/// Checks every rule against `claims` (a JWT claims set, RFC 7519 section 4). Returns the
/// first failing rule as client-safe text built only from the config (`claim role must equal
/// "admin"`); claim values from the token are never included.
///
/// Semantics:
/// - `equals`: the claim is present and equals the value (numbers compare by value, so `1`
///   equals `1.0`; everything else by JSON equality: `"1"` does not equal `1`).
/// - `not_equals`: the claim is present and differs from the value (absent fails: a rule
///   about a claim the token lacks cannot be proven).
/// - `in`: the claim equals one element of the value (a list).
/// - `contains`: the claim is an array with an element equal to the value, or a string that
///   contains the value (a string) as a substring.
/// - `exists`: the claim is present and not `null`.
pub fn check_rules(rules: &[ClaimRule], claims: &Value) -> Result<(), String> {
    for rule in rules {
        if !holds(rule, claims) {
            return Err(describe(rule));
        }
    }
    Ok(())
}

fn holds(rule: &ClaimRule, claims: &Value) -> bool {
    let found = lookup(claims, &rule.claim).filter(|v| !v.is_null());
    let (Some(claim), expected) = (found, rule.value.as_ref()) else {
        return false;
    };
    match (rule.operator, expected) {
        (ClaimOperator::Exists, _) => true,
        (ClaimOperator::Equals, Some(want)) => json_eq(claim, want),
        (ClaimOperator::NotEquals, Some(want)) => !json_eq(claim, want),
        (ClaimOperator::In, Some(Value::Array(options))) => {
            options.iter().any(|want| json_eq(claim, want))
        }
        (ClaimOperator::Contains, Some(want)) => match (claim, want) {
            (Value::Array(items), _) => items.iter().any(|item| json_eq(item, want)),
            (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
            _ => false,
        },
        // A value the config validation should have rejected (`in` without a list, or no
        // value): the rule cannot hold. Fail closed.
        _ => false,
    }
}

/// The claim at `path` in `claims`. A claim whose name itself contains dots (namespaced
/// claims such as `https://example.com/roles`) is found too: at each level the longest key
/// that is a prefix of the remaining path (up to a `.`) wins, so `realm_access.roles` is
/// `claims["realm_access"]["roles"]` unless the object has a key `realm_access.roles`.
pub fn lookup<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    let obj = claims.as_object()?;
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut end = path.len();
    while let Some(dot) = path[..end].rfind('.') {
        if let Some(child) = obj.get(&path[..dot]) {
            if let Some(found) = lookup(child, &path[dot + 1..]) {
                return Some(found);
            }
        }
        end = dot;
    }
    None
}

/// JSON equality with numbers compared by value (`1 == 1.0`); integers beyond 2^53 compare
/// exactly when both are integers.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

/// The rule as the 403 message states it.
fn describe(rule: &ClaimRule) -> String {
    let value = rule
        .value
        .as_ref()
        .map_or_else(|| "null".to_owned(), Value::to_string);
    let c = &rule.claim;
    match rule.operator {
        ClaimOperator::Equals => format!("claim {c} must equal {value}"),
        ClaimOperator::NotEquals => format!("claim {c} must be present and not equal {value}"),
        ClaimOperator::In => format!("claim {c} must be one of {value}"),
        ClaimOperator::Contains => format!("claim {c} must contain {value}"),
        ClaimOperator::Exists => format!("claim {c} must be present"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(claim: &str, operator: ClaimOperator, value: Option<Value>) -> ClaimRule {
        ClaimRule {
            claim: claim.to_owned(),
            operator,
            value,
        }
    }

    fn claims() -> Value {
        json!({
            "sub": "alice",
            "role": "admin",
            "level": 3,
            "groups": ["dev", "ops"],
            "scope": "read:objects write:objects",
            "realm_access": {"roles": ["reader", "auditor"], "tier": {"name": "gold"}},
            "https://example.com/roles": ["editor"],
            "empty": null
        })
    }

    fn check(r: ClaimRule) -> Result<(), String> {
        check_rules(&[r], &claims())
    }

    #[test]
    fn equals() {
        assert!(check(rule("role", ClaimOperator::Equals, Some(json!("admin")))).is_ok());
        assert_eq!(
            check(rule("role", ClaimOperator::Equals, Some(json!("root")))).unwrap_err(),
            r#"claim role must equal "root""#
        );
        assert!(check(rule("level", ClaimOperator::Equals, Some(json!(3.0)))).is_ok());
        assert!(check(rule("level", ClaimOperator::Equals, Some(json!("3")))).is_err());
        assert!(check(rule("missing", ClaimOperator::Equals, Some(json!("x")))).is_err());
    }

    #[test]
    fn not_equals() {
        assert!(check(rule("role", ClaimOperator::NotEquals, Some(json!("guest")))).is_ok());
        assert!(check(rule("role", ClaimOperator::NotEquals, Some(json!("admin")))).is_err());
        // Absent claims fail: the token does not prove anything about them.
        let err = check(rule("missing", ClaimOperator::NotEquals, Some(json!("x"))));
        assert_eq!(
            err.unwrap_err(),
            r#"claim missing must be present and not equal "x""#
        );
    }

    #[test]
    fn in_list() {
        let r = rule("role", ClaimOperator::In, Some(json!(["admin", "ops"])));
        assert!(check(r).is_ok());
        let r = rule("role", ClaimOperator::In, Some(json!(["ops", "dev"])));
        assert_eq!(
            check(r).unwrap_err(),
            r#"claim role must be one of ["ops","dev"]"#
        );
        let r = rule("level", ClaimOperator::In, Some(json!([1, 2, 3])));
        assert!(check(r).is_ok());
        // A non-list operand never holds (fail closed).
        assert!(check(rule("role", ClaimOperator::In, Some(json!("admin")))).is_err());
    }

    #[test]
    fn contains_array_and_substring() {
        assert!(check(rule("groups", ClaimOperator::Contains, Some(json!("ops")))).is_ok());
        assert!(check(rule("groups", ClaimOperator::Contains, Some(json!("op")))).is_err());
        let r = rule(
            "scope",
            ClaimOperator::Contains,
            Some(json!("write:objects")),
        );
        assert!(check(r).is_ok());
        let r = rule("scope", ClaimOperator::Contains, Some(json!("delete")));
        assert_eq!(
            check(r).unwrap_err(),
            r#"claim scope must contain "delete""#
        );
        // A number claim contains nothing.
        assert!(check(rule("level", ClaimOperator::Contains, Some(json!(3)))).is_err());
    }

    #[test]
    fn exists() {
        assert!(check(rule("sub", ClaimOperator::Exists, None)).is_ok());
        assert_eq!(
            check(rule("nope", ClaimOperator::Exists, None)).unwrap_err(),
            "claim nope must be present"
        );
        assert!(check(rule("empty", ClaimOperator::Exists, None)).is_err());
    }

    #[test]
    fn dotted_paths() {
        let r = rule(
            "realm_access.roles",
            ClaimOperator::Contains,
            Some(json!("auditor")),
        );
        assert!(check(r).is_ok());
        let r = rule(
            "realm_access.tier.name",
            ClaimOperator::Equals,
            Some(json!("gold")),
        );
        assert!(check(r).is_ok());
        let r = rule(
            "realm_access.roles",
            ClaimOperator::Contains,
            Some(json!("admin")),
        );
        assert!(check(r).is_err());
        assert!(check(rule("realm_access.nope", ClaimOperator::Exists, None)).is_err());
        assert!(check(rule("role.sub", ClaimOperator::Exists, None)).is_err());
        // Namespaced claim names containing dots resolve as whole keys.
        let r = rule(
            "https://example.com/roles",
            ClaimOperator::Contains,
            Some(json!("editor")),
        );
        assert!(check(r).is_ok());
    }

    #[test]
    fn all_rules_must_pass() {
        let rules = [
            rule("role", ClaimOperator::Equals, Some(json!("admin"))),
            rule("groups", ClaimOperator::Contains, Some(json!("qa"))),
            rule("sub", ClaimOperator::Exists, None),
        ];
        assert_eq!(
            check_rules(&rules, &claims()).unwrap_err(),
            r#"claim groups must contain "qa""#
        );
        assert!(check_rules(&rules[..1], &claims()).is_ok());
        assert!(check_rules(&[], &claims()).is_ok());
    }
}
