//! API request lines: random bytes, and valid requests with one field dropped, added, or given
//! a value of another type. Never a panic; every refusal names the field it is about.

use std::net::IpAddr;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{check_message, fuzz};
use crate::api::{Request, parse_request};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "tcp/203.0.113.10:80",
            "udp/[2001:db8::1]:*",
            "tcp/203.0.113.10",
            "198.51.100.7",
            "224.0.0.1",
            "::",
            "2001:db8::7",
            "",
            "status",
            "add_backend",
        ])
        .prop_map(|s| json!(s)),
        "\\PC{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn valid_request() -> impl Strategy<Value = Request> {
    let vip = (any::<bool>(), any_addr(), any::<u16>()).prop_map(|(udp, addr, port)| {
        format!(
            "{}/{}",
            if udp { "udp" } else { "tcp" },
            std::net::SocketAddr::new(addr, port)
        )
        .parse()
        .unwrap()
    });
    (vip, any_addr(), any::<u32>(), 0usize..9, any::<bool>()).prop_map(
        |(vip, addr, weight, op, detach)| match op {
            0 => Request::Status,
            1 => Request::AddBackend { vip, addr, weight },
            2 => Request::RemoveBackend { vip, addr },
            3 => Request::Drain { vip, addr },
            4 => Request::SetWeight { vip, addr, weight },
            5 => Request::Reload,
            6 => Request::DrainNode,
            7 => Request::UndrainNode,
            _ => Request::Shutdown { detach },
        },
    )
}

#[derive(Clone, Debug)]
enum Change {
    Drop(usize),
    Add(String, Value),
    Retype(usize, Value),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<usize>().prop_map(Change::Drop),
        ("[a-z_]{1,10}", any_json()).prop_map(|(k, v)| Change::Add(k, v)),
        (any::<usize>(), any_json()).prop_map(|(i, v)| Change::Retype(i, v)),
    ]
}

/// The message must start as every API refusal does, and say what went wrong.
fn refused(line: &[u8]) -> Result<String, TestCaseError> {
    match parse_request(line) {
        Ok(_) => Err(TestCaseError::reject("accepted")),
        Err(msg) => {
            check_message(&msg, "")?;
            prop_assert!(msg.starts_with("malformed request: "), "{msg}");
            Ok(msg)
        }
    }
}

#[test]
fn fuzz_api_lines() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| (None, b)),
        (valid_request(), change()).prop_map(|(r, c)| (Some(c), serde_json::to_vec(&r).unwrap())),
    ];
    fuzz("api_lines", 600, strategy, |(change, line)| {
        let Some(change) = change else {
            // Random bytes: anything but a panic.
            if let Err(msg) = parse_request(&line) {
                check_message(&msg, "")?;
            }
            return Ok(());
        };
        let Value::Object(mut fields) = serde_json::from_slice::<Value>(&line).unwrap() else {
            unreachable!()
        };
        let keys: Vec<String> = fields.keys().cloned().collect();
        let key = |i: usize| keys[i % keys.len()].clone();
        let allowed = fields.clone();
        match &change {
            Change::Drop(i) => {
                let k = key(*i);
                fields.remove(&k);
                let msg = refused(&to_line(&fields))
                    .map_err(|_| TestCaseError::fail(format!("accepted without `{k}`")))?;
                prop_assert!(msg.contains(&format!("missing field `{k}`")), "{msg}");
            }
            Change::Add(k, v) => {
                if allowed.contains_key(k) {
                    return Ok(());
                }
                fields.insert(k.clone(), v.clone());
                let msg = refused(&to_line(&fields))
                    .map_err(|_| TestCaseError::fail(format!("accepted with `{k}`")))?;
                prop_assert!(msg.contains(&format!("unknown field `{k}`")), "{msg}");
            }
            Change::Retype(i, v) => {
                let k = key(*i);
                fields.insert(k.clone(), v.clone());
                // A value of the right type may still be valid; a refusal names the field.
                // Another op makes the other fields the wrong ones: any clear refusal will do.
                if let Ok(msg) = refused(&to_line(&fields))
                    && k != "op"
                {
                    prop_assert!(msg.contains(&format!("`{k}`")), "{k}: {msg}");
                }
            }
        }
        Ok(())
    });
}

fn to_line(fields: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(fields).unwrap()
}
