//! Neighbour entries as the kernel reports them, and which of them hold an address forwarded
//! frames may be sent to.

use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage, NeighbourState};

/// Whether a neighbour entry in `state` holds an address worth forwarding to: REACHABLE,
/// STALE, DELAY, PROBE (the address is known, the kernel is merely re-confirming it) and
/// PERMANENT. INCOMPLETE, FAILED, NONE and NOARP do not (NOARP entries carry no neighbour's
/// address, just a device or multicast mapping).
pub fn usable_state(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    )
}

/// Why `mac` cannot be the destination of a forwarded frame, if it cannot: all zeros (an
/// entry without a real address, e.g. `ip neigh add ... lladdr 0:0:0:0:0:0`) or a group
/// address (the I/G bit), which would flood every forwarded frame over the segment.
pub fn non_unicast_mac(mac: &[u8; 6]) -> Option<&'static str> {
    if *mac == [0; 6] {
        Some("the all-zero")
    } else if *mac == [0xff; 6] {
        Some("the broadcast")
    } else if mac[0] & 1 != 0 {
        Some("a multicast")
    } else {
        None
    }
}

pub(super) fn fmt_mac(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// A neighbour entry as read from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NeighbourEntry {
    pub state: NeighbourState,
    /// `None` unless the entry carries a 6-byte link-layer address.
    pub mac: Option<[u8; 6]>,
}

impl NeighbourEntry {
    /// The address to forward to: `Ok(None)` while the entry has none worth using yet,
    /// `Err(what)` when it holds one no frame should be sent to.
    pub fn usable_mac(&self) -> Result<Option<[u8; 6]>, &'static str> {
        match self.mac.filter(|_| usable_state(self.state)) {
            Some(mac) => match non_unicast_mac(&mac) {
                Some(what) => Err(what),
                None => Ok(Some(mac)),
            },
            None => Ok(None),
        }
    }
}

pub(crate) fn neighbour_entry(msg: &NeighbourMessage) -> NeighbourEntry {
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(lla) => <[u8; 6]>::try_from(lla.as_slice()).ok(),
        _ => None,
    });
    NeighbourEntry {
        state: msg.header.state,
        mac,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::netlink::NetlinkError;

    #[test]
    fn usable_states() {
        use NeighbourState::*;
        for s in [Reachable, Stale, Delay, Probe, Permanent] {
            assert!(usable_state(s), "{s:?}");
        }
        for s in [Incomplete, Failed, None, Noarp, Other(0x100)] {
            assert!(!usable_state(s), "{s:?}");
        }
    }

    #[test]
    fn neighbour_entry_needs_six_bytes() {
        let mut n = NeighbourMessage::default();
        n.header.state = NeighbourState::Reachable;
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(neighbour_entry(&n).mac, Some([2, 0, 0, 0, 0, 9]));
        n.attributes = vec![NeighbourAttribute::LinkLayerAddress(vec![0; 4])];
        assert_eq!(neighbour_entry(&n).mac, None);
    }

    #[test]
    fn all_zero_and_group_neighbour_addresses_are_refused() {
        let entry = |mac| NeighbourEntry {
            state: NeighbourState::Reachable,
            mac: Some(mac),
        };
        assert_eq!(entry([0; 6]).usable_mac(), Err("the all-zero"));
        assert_eq!(entry([0xff; 6]).usable_mac(), Err("the broadcast"));
        assert_eq!(
            entry([0x01, 0x00, 0x5e, 0, 0, 1]).usable_mac(),
            Err("a multicast")
        );
        assert_eq!(
            entry([0x33, 0x33, 0, 0, 0, 1]).usable_mac(),
            Err("a multicast")
        );
        assert_eq!(
            entry([2, 0, 0, 0, 0, 9]).usable_mac(),
            Ok(Some([2, 0, 0, 0, 0, 9]))
        );
        // Not yet usable: no verdict on the address.
        let incomplete = NeighbourEntry {
            state: NeighbourState::Incomplete,
            mac: Some([0; 6]),
        };
        assert_eq!(incomplete.usable_mac(), Ok(None));
        let e = NetlinkError::BadNeighbourMac {
            dst: "198.51.100.7".parse::<IpAddr>().unwrap(),
            neighbour: "198.51.100.1".parse().unwrap(),
            mac: [0x01, 0x00, 0x5e, 0, 0, 1],
            what: "a multicast",
        };
        assert_eq!(
            e.to_string(),
            "next hop 198.51.100.1 (toward 198.51.100.7) has link-layer address \
             01:00:5e:00:00:01, which is a multicast address: forwarded frames cannot be sent \
             to it; fix the entry (`ip neigh show 198.51.100.1`)"
        );
    }
}
