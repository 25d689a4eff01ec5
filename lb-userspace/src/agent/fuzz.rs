//! The API's changes against a running agent (fuzz target `api_handlers`, harness in
//! `crate::fuzz`): random sequences of requests on backends configured or not, unicast or
//! not, with any weight, some of them meeting a map write that fails. None panics; a refused
//! request leaves what the API keeps (additions, removals, weights) as it was, and a backend
//! that is not unicast is never added.

use std::net::IpAddr;
use std::path::Path;

use proptest::prelude::*;

use super::handlers::Answer;
use super::state::testing::{agent, three_backends};
use crate::api::{Request, Response};
use crate::fuzz::{check_message, fuzz};
use crate::model::{MAX_WEIGHT, VipId};

const ADDRS: &[&str] = &[
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.3",
    "198.51.100.4",
    "198.51.100.5",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "127.0.0.1",
    "2001:db8::5",
    "ff02::1",
];

fn request(configured: VipId) -> impl Strategy<Value = Request> {
    let mut other = configured;
    other.port = 81;
    let vip = prop::sample::select(vec![configured, configured, configured, other]);
    let addr = prop::sample::select(ADDRS).prop_map(|a| a.parse::<IpAddr>().unwrap());
    let weight = prop::sample::select(vec![0, 1, 100, MAX_WEIGHT, MAX_WEIGHT + 1, u32::MAX]);
    (vip, addr, weight, 0..6).prop_map(|(vip, addr, weight, op)| match op {
        0 => Request::AddBackend { vip, addr, weight },
        1 => Request::RemoveBackend { vip, addr },
        2 => Request::Drain { vip, addr },
        3 => Request::SetWeight { vip, addr, weight },
        4 => Request::AddBackend { vip, addr, weight },
        _ => Request::Status,
    })
}

#[test]
fn fuzz_api_handlers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _in_runtime = rt.enter();
    let cfg = three_backends();
    let id = cfg.vips[0].id;
    // A step: a request, and maybe the position (after the store's next write) that fails.
    let steps = prop::collection::vec((request(id), prop::option::of(0usize..4)), 1..8);
    fuzz("api_handlers", 40, steps, |steps| {
        let mut a = agent(cfg.clone(), Path::new("/nonexistent"));
        for (request, fail) in steps {
            let at = a.reconciler.store().log.len();
            a.reconciler.store_mut().fail_at = fail.map(|f| at + f);
            let before = (
                a.added.clone(),
                a.removed.clone(),
                a.overrides.weights.clone(),
            );
            let Answer::Reply(response) = a.answer(request.clone()) else {
                return Err(TestCaseError::fail("a change request stopped the agent"));
            };
            a.reconciler.store_mut().fail_at = None;
            match response {
                Response::Error { message } => {
                    check_message(&message, "")?;
                    let after = (
                        a.added.clone(),
                        a.removed.clone(),
                        a.overrides.weights.clone(),
                    );
                    prop_assert_eq!(&before, &after, "{:?} refused: {}", request, message);
                }
                Response::Ok { .. } | Response::Status(_) => {
                    if let Request::AddBackend { addr, .. } = request {
                        prop_assert!(
                            !(addr.is_unspecified() || addr.is_multicast() || addr.is_loopback())
                                && addr != IpAddr::from([255, 255, 255, 255]),
                            "{addr} added"
                        );
                    }
                }
            }
        }
        Ok(())
    });
}
