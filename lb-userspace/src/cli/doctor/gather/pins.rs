//! The pin directory's facts: whether it exists and is on bpffs, the map layouts and XDP links
//! pinned there.

use std::fs;
use std::io;
use std::path::Path;

use crate::cli::doctor::facts::PinFacts;

pub(super) fn read_pin_dir(dir: &Path) -> PinFacts {
    let mut p = PinFacts {
        dir: dir.to_path_buf(),
        ..PinFacts::default()
    };
    match fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            p.exists = true;
            p.read_error = Some(e.to_string());
        }
        Ok(entries) => {
            p.exists = true;
            p.on_bpffs = is_bpffs(dir);
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some(v) = name.strip_prefix("maps-v").and_then(|v| v.parse().ok()) {
                    p.versions.push(v);
                } else if let Some(l) = name.strip_prefix("link-") {
                    p.links.push(l.to_string());
                }
            }
            p.versions.sort_unstable();
            p.links.sort();
        }
    }
    p
}

fn is_bpffs(path: &Path) -> Option<bool> {
    use std::os::unix::ffi::OsStrExt;
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64 == BPF_FS_MAGIC)
}
