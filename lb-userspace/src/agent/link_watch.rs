//! The XDP interface's state as the agent sees it on each neighbour resolution (which every
//! link notification triggers): down/up and whether the program is still attached, each
//! change reported once.
//!
//! The kernel keeps an XDP program attached across `ip link set down`/`up`, and the pinned
//! link keeps it across agent restarts; what removes it is the interface being deleted (and
//! re-created) or another tool replacing it. A down interface forwards nothing, but needs
//! nothing from the agent: its routes and neighbours come back with it, the resolutions that
//! the link notifications trigger pick them up, and forwarding resumes. A missing program is an outage the agent cannot mend without
//! its loader, so it says what to do.

use crate::netlink::Link;

/// A change of the interface worth one log line and one count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkEvent {
    /// Administratively down or without carrier: nothing leaves or arrives.
    Down,
    Up,
    /// No XDP program on the interface any more.
    XdpDetached,
    /// An XDP program is there again.
    XdpAttached,
}

impl LinkEvent {
    /// The metric label.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::XdpDetached => "xdp_detached",
            Self::XdpAttached => "xdp_attached",
        }
    }
}

/// What was last seen; `None` until the first look.
#[derive(Debug, Default)]
pub(super) struct LinkWatch {
    usable: Option<bool>,
    xdp: Option<bool>,
}

impl LinkWatch {
    /// Folds in one look at the interface (`xdp`: whether a program is attached, `None` when
    /// that could not be asked). The first look reports only problems: the agent attached the
    /// program and found the interface at start, so "up" and "attached" are no news.
    pub(super) fn observe(&mut self, link: &Link, xdp: Option<bool>) -> Vec<LinkEvent> {
        let mut events = Vec::new();
        let usable = link.up && link.carrier;
        match (self.usable.replace(usable), usable) {
            (Some(true) | None, false) => events.push(LinkEvent::Down),
            (Some(false), true) => events.push(LinkEvent::Up),
            _ => {}
        }
        if let Some(xdp) = xdp {
            match (self.xdp.replace(xdp), xdp) {
                (Some(true) | None, false) => events.push(LinkEvent::XdpDetached),
                (Some(false), true) => events.push(LinkEvent::XdpAttached),
                _ => {}
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(up: bool, carrier: bool) -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            mac: [2, 0, 0x5e, 0, 0x53, 1],
            mtu: 1500,
            up,
            carrier,
        }
    }

    #[test]
    fn down_and_up_are_reported_once_each() {
        let mut w = LinkWatch::default();
        assert_eq!(w.observe(&link(true, true), Some(true)), []);
        assert_eq!(w.observe(&link(true, true), Some(true)), []);
        // Carrier lost: down, once however many notifications follow.
        assert_eq!(w.observe(&link(true, false), Some(true)), [LinkEvent::Down]);
        assert_eq!(w.observe(&link(false, false), Some(true)), []);
        assert_eq!(w.observe(&link(false, false), Some(true)), []);
        assert_eq!(w.observe(&link(true, true), Some(true)), [LinkEvent::Up]);
        assert_eq!(w.observe(&link(true, true), Some(true)), []);
    }

    #[test]
    fn a_lost_program_is_reported_once_and_its_return_too() {
        let mut w = LinkWatch::default();
        assert_eq!(w.observe(&link(true, true), Some(true)), []);
        assert_eq!(
            w.observe(&link(true, true), Some(false)),
            [LinkEvent::XdpDetached]
        );
        assert_eq!(w.observe(&link(true, true), Some(false)), []);
        // Not knowing changes nothing.
        assert_eq!(w.observe(&link(true, true), None), []);
        assert_eq!(
            w.observe(&link(true, true), Some(true)),
            [LinkEvent::XdpAttached]
        );
    }

    #[test]
    fn the_first_look_reports_only_problems() {
        let mut w = LinkWatch::default();
        assert_eq!(
            w.observe(&link(false, false), Some(false)),
            [LinkEvent::Down, LinkEvent::XdpDetached]
        );
        let mut w = LinkWatch::default();
        assert_eq!(w.observe(&link(true, true), None), []);
    }
}
