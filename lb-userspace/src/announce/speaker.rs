//! The seam between the announcement logic and whatever carries routes to the routers. Today
//! that is a kernel routing table that BIRD learns ([`KernelTable`]); a speaker with an API of
//! its own (GoBGP's gRPC) would be another implementation.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::netlink::{NetlinkError, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("kernel table {table} (proto {protocol}): {source}")]
    Kernel {
        table: u32,
        protocol: u8,
        #[source]
        source: NetlinkError,
    },
    /// The fake's injected failure.
    #[error("{0}")]
    Other(String),
}

/// What the speaker holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Addresses announced by us (a previous agent included).
    pub ours: BTreeSet<IpAddr>,
    /// Entries of others where ours belong (routes of another protocol in our table), as
    /// `ip route` would print them: the table is used by something else.
    pub foreign: Vec<String>,
}

pub trait Speaker: Send {
    /// Where the routes go, for logs and status (`kernel table 200 proto 200`).
    fn describe(&self) -> String;
    /// Announces `addr` (idempotent).
    fn announce(&mut self, addr: IpAddr) -> Result<(), SpeakerError>;
    /// Withdraws `addr` (idempotent: an absent route is no error).
    fn withdraw(&mut self, addr: IpAddr) -> Result<(), SpeakerError>;
    /// What is announced now.
    fn list(&mut self) -> Result<Listing, SpeakerError>;
}

/// Host routes in a kernel table for BIRD's `kernel` protocol (`learn`) to export.
#[derive(Debug)]
pub struct KernelTable {
    table: RouteTable,
}

impl KernelTable {
    /// Opens it in the calling thread's network namespace.
    pub fn open(table: u32, protocol: u8) -> Result<Self, SpeakerError> {
        RouteTable::open(table, protocol)
            .map(|table| Self { table })
            .map_err(|source| SpeakerError::Kernel {
                table,
                protocol,
                source,
            })
    }

    fn err(&self, source: NetlinkError) -> SpeakerError {
        SpeakerError::Kernel {
            table: self.table.table(),
            protocol: self.table.protocol(),
            source,
        }
    }
}

impl Speaker for KernelTable {
    fn describe(&self) -> String {
        format!(
            "kernel table {} proto {}",
            self.table.table(),
            self.table.protocol()
        )
    }

    fn announce(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.table.add(addr).map_err(|e| self.err(e))
    }

    fn withdraw(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.table.delete(addr).map_err(|e| self.err(e))
    }

    fn list(&mut self) -> Result<Listing, SpeakerError> {
        let routes = self.table.list().map_err(|e| self.err(e))?;
        let mut listing = Listing::default();
        for r in routes {
            if self.table.is_ours(&r) {
                listing.ours.insert(r.dst);
            } else {
                listing
                    .foreign
                    .push(format!("{}/{} proto {}", r.dst, r.prefix_len, r.protocol));
            }
        }
        Ok(listing)
    }
}

/// An in-memory speaker for tests: a set of addresses, a log of calls, and failures on demand.
#[derive(Clone, Debug, Default)]
pub struct FakeSpeaker {
    pub routes: BTreeSet<IpAddr>,
    pub foreign: Vec<String>,
    /// `(true = announce / false = withdraw, addr)` per successful call.
    pub log: Vec<(bool, IpAddr)>,
    /// While set, every call fails with this message.
    pub fail: Option<String>,
}

impl FakeSpeaker {
    fn check(&self) -> Result<(), SpeakerError> {
        match &self.fail {
            Some(m) => Err(SpeakerError::Other(m.clone())),
            None => Ok(()),
        }
    }
}

impl Speaker for FakeSpeaker {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn announce(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.check()?;
        self.routes.insert(addr);
        self.log.push((true, addr));
        Ok(())
    }
    fn withdraw(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.check()?;
        self.routes.remove(&addr);
        self.log.push((false, addr));
        Ok(())
    }
    fn list(&mut self) -> Result<Listing, SpeakerError> {
        self.check()?;
        Ok(Listing {
            ours: self.routes.clone(),
            foreign: self.foreign.clone(),
        })
    }
}

/// A [`FakeSpeaker`] shared with the test that inspects it while an announcer owns it.
#[derive(Clone, Debug, Default)]
pub struct SharedFake(pub std::sync::Arc<std::sync::Mutex<FakeSpeaker>>);

impl SharedFake {
    pub fn get(&self) -> std::sync::MutexGuard<'_, FakeSpeaker> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Speaker for SharedFake {
    fn describe(&self) -> String {
        "fake".into()
    }
    fn announce(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.get().announce(addr)
    }
    fn withdraw(&mut self, addr: IpAddr) -> Result<(), SpeakerError> {
        self.get().withdraw(addr)
    }
    fn list(&mut self) -> Result<Listing, SpeakerError> {
        self.get().list()
    }
}
