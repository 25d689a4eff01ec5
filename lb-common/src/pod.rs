//! aya `Pod` impls: every type is `#[repr(C)]`, has no implicit padding (explicit `_pad` fields
//! and size asserts) and accepts any bit pattern.

use crate::{flows::*, keys::*, stats::GlobalStats, values::*};

macro_rules! pod {
    ($($t:ty),* $(,)?) => {
        // SAFETY: see the module comment.
        $(unsafe impl aya::Pod for $t {})*
    };
}

pod!(
    VipKey,
    FlowKey,
    VipMeta,
    Backend,
    FlowEntry,
    FlowSlot,
    FlowSet,
    LbConfig,
    IcmpBucket,
    TrafficStats,
    DecapConfig,
    GlobalStats,
);
