//! Reading a request line: JSON, then field by field, so that every refusal names the field it
//! is about (serde's internally tagged enums lose the field of a type error and accept unknown
//! fields on operations without any).

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::types::Request;
use crate::model::VipId;

/// Each operation and the fields it takes besides `op`.
const FIELDS: &[(&str, &[&str])] = &[
    ("status", &[]),
    ("add_backend", &["vip", "addr", "weight"]),
    ("remove_backend", &["vip", "addr"]),
    ("drain", &["vip", "addr"]),
    ("set_weight", &["vip", "addr", "weight"]),
    ("reload", &[]),
    ("drain_node", &[]),
    ("undrain_node", &[]),
    ("shutdown", &["detach"]),
];

/// One request line -> [`Request`], or the message of the error answer.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let malformed = |why: String| format!("malformed request: {}", middle_cut(&why));
    let value: Value = serde_json::from_slice(line).map_err(|e| malformed(e.to_string()))?;
    let Value::Object(fields) = &value else {
        return Err(malformed(
            "expected a JSON object, e.g. {\"op\":\"status\"}".into(),
        ));
    };
    let op = match fields.get("op") {
        None => return Err(malformed("missing field `op`".into())),
        Some(Value::String(op)) => op.as_str(),
        Some(other) => {
            return Err(malformed(format!(
                "field `op`: expected a string such as \"status\", got {}",
                kind(other)
            )));
        }
    };
    // An unknown op is left to serde, whose message lists the known ones.
    if let Some((_, allowed)) = FIELDS.iter().find(|(name, _)| *name == op) {
        check_fields(op, allowed, fields).map_err(malformed)?;
    }
    serde_json::from_value(value).map_err(|e| malformed(e.to_string()))
}

fn check_fields(op: &str, allowed: &[&str], fields: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in fields {
        if key == "op" {
            continue;
        }
        if !allowed.contains(&key.as_str()) {
            let takes = if allowed.is_empty() {
                "it takes no other fields".to_owned()
            } else {
                let names: Vec<String> = allowed.iter().map(|f| format!("`{f}`")).collect();
                format!("it takes {}", names.join(", "))
            };
            return Err(format!("unknown field `{key}` for op \"{op}\": {takes}"));
        }
        let checked = match key.as_str() {
            "vip" => String::deserialize(value)
                .map_err(|e| e.to_string())
                .and_then(|s| s.parse::<VipId>().map(drop).map_err(|e| e.to_string())),
            "addr" => IpAddr::deserialize(value)
                .map(drop)
                .map_err(|e| format!("{e}: write e.g. \"198.51.100.7\" or \"2001:db8::7\"")),
            "weight" => u32::deserialize(value)
                .map(drop)
                .map_err(|_| format!("expected a whole number, got {}", kind(value))),
            "detach" => bool::deserialize(value)
                .map(drop)
                .map_err(|_| format!("expected true or false, got {}", kind(value))),
            _ => Ok(()),
        };
        checked.map_err(|e| format!("field `{key}`: {e}"))?;
    }
    Ok(())
}

/// serde's message quotes what it refused (`unknown variant `xxx…``): a line of up to 64 KiB
/// must not come back whole. Cut in the middle, so what was expected stays.
fn middle_cut(msg: &str) -> String {
    const HEAD: usize = 150;
    const TAIL: usize = 150;
    let n = msg.chars().count();
    if n <= HEAD + TAIL + 20 {
        return msg.to_owned();
    }
    let head: String = msg.chars().take(HEAD).collect();
    let tail: String = msg.chars().skip(n - TAIL).collect();
    format!("{head}… ({} characters) …{tail}", n - HEAD - TAIL)
}

/// A JSON value as the error names it, without echoing a long one.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.len() <= 40 => format!("{s:?}"),
        Value::String(s) => format!("a string of {} bytes", s.len()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> String {
        parse_request(line.as_bytes()).unwrap_err()
    }

    #[test]
    fn every_request_parses_back_and_the_field_table_matches_the_types() {
        let vip: VipId = "tcp/203.0.113.10:80".parse().unwrap();
        let addr: IpAddr = "198.51.100.7".parse().unwrap();
        let all = [
            Request::Status,
            Request::AddBackend {
                vip,
                addr,
                weight: 3,
            },
            Request::RemoveBackend { vip, addr },
            Request::Drain { vip, addr },
            Request::SetWeight {
                vip,
                addr,
                weight: 0,
            },
            Request::Reload,
            Request::DrainNode,
            Request::UndrainNode,
            Request::Shutdown { detach: true },
        ];
        assert_eq!(all.len(), FIELDS.len());
        for r in all {
            let line = serde_json::to_vec(&r).unwrap();
            assert_eq!(parse_request(&line), Ok(r.clone()));
            // Serde writes exactly the fields the table lists.
            let Value::Object(fields) = serde_json::to_value(&r).unwrap() else {
                panic!()
            };
            let op = fields["op"].as_str().unwrap();
            let (_, allowed) = FIELDS.iter().find(|(n, _)| *n == op).unwrap();
            let mut got: Vec<&str> = fields
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "op")
                .collect();
            let mut want = allowed.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "{op}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        assert_eq!(
            err(r#"{"op":"status","verbose":true}"#),
            "malformed request: unknown field `verbose` for op \"status\": it takes no other fields"
        );
        assert_eq!(
            err(r#"{"op":"drain","vip":"tcp/203.0.113.10:80","addr":"198.51.100.7","weight":0}"#),
            "malformed request: unknown field `weight` for op \"drain\": it takes `vip`, `addr`"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        for (line, want) in [
            (
                r#"{"op":1}"#,
                "field `op`: expected a string such as \"status\", got 1",
            ),
            (
                r#"{"op":"set_weight","vip":"tcp/203.0.113.10:80","addr":"198.51.100.7","weight":-1}"#,
                "field `weight`: expected a whole number, got -1",
            ),
            (
                r#"{"op":"set_weight","vip":"tcp/203.0.113.10:80","addr":"198.51.100.7","weight":4294967296}"#,
                "field `weight`: expected a whole number, got 4294967296",
            ),
            (
                r#"{"op":"drain","vip":"tcp/203.0.113.10:80","addr":"198.51.100.300"}"#,
                "field `addr`: invalid IP address syntax",
            ),
            (
                r#"{"op":"drain","vip":7,"addr":"198.51.100.7"}"#,
                "field `vip`: invalid type",
            ),
            (
                r#"{"op":"drain","vip":"tcp/203.0.113.10","addr":"198.51.100.7"}"#,
                "field `vip`: invalid VIP \"tcp/203.0.113.10\": missing the port",
            ),
            (
                r#"{"op":"shutdown","detach":"yes"}"#,
                "field `detach`: expected true or false",
            ),
        ] {
            let e = err(line);
            assert!(e.starts_with(&format!("malformed request: {want}")), "{e}");
        }
    }

    #[test]
    fn other_shapes_are_explained() {
        assert_eq!(
            err("[1]"),
            "malformed request: expected a JSON object, e.g. {\"op\":\"status\"}"
        );
        assert_eq!(err("{}"), "malformed request: missing field `op`");
        assert!(err(r#"{"op":"explode"}"#).contains("unknown variant `explode`"));
        assert!(
            err(r#"{"op":"drain","vip":"tcp/203.0.113.10:80"}"#).contains("missing field `addr`")
        );
    }

    #[test]
    fn huge_values_are_not_echoed_whole() {
        let line = format!(r#"{{"op":"{}"}}"#, "x".repeat(60_000));
        let e = err(&line);
        assert!(e.len() < 600, "{} bytes", e.len());
        assert!(e.contains("unknown variant"), "{e}");
        assert!(e.ends_with("`shutdown`"), "{e}");
    }
}
