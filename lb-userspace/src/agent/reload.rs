//! Reload (SIGHUP or `xlb reload`): re-read the config file and apply it, or, when the maps
//! refuse it, roll back to the config that runs.

use tracing::warn;

use crate::api::ReloadInfo;
use crate::config;
use crate::maps::MapStore;
use crate::model::Config;

use super::state::Agent;

impl<S: MapStore> Agent<S> {
    /// Re-reads the config file and applies it; a refused config leaves everything as it was.
    /// API changes (weights of backends that stay aside) end here: the file is the truth again.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let result = match config::load(&self.config_path, &*self.env) {
            Err(e) => Err(e.to_string()),
            Ok(v) => {
                for w in &v.warnings {
                    warn!("config: {w}");
                }
                self.replace_config(v.config)
            }
        };
        self.metrics.record_reload(result.is_ok());
        self.last_reload = Some(match &result {
            Ok(m) => ReloadInfo::now(true, m.clone()),
            Err(m) => ReloadInfo::now(false, m.clone()),
        });
        result
    }

    /// Applies `new` in place of the running config; on failure restores and re-applies the
    /// running one.
    fn replace_config(&mut self, new: Config) -> Result<String, String> {
        let fixed = restart_only_changes(&self.file, &new);
        if !fixed.is_empty() {
            warn!(
                "these settings take effect only after a restart (or a detach, for map sizes): {}",
                fixed.join(", ")
            );
        }
        let diff = config::diff(&self.file, &new);
        let old = std::mem::replace(&mut self.file, new);
        let (old_added, old_removed) = (
            std::mem::take(&mut self.added),
            std::mem::take(&mut self.removed),
        );
        self.prune_overrides();
        self.start_health();
        // New backends stay out of the ring until their MAC is resolved (the reply does not
        // wait for that).
        self.request_net();
        match self.apply("reload") {
            Ok(()) => Ok(if diff.is_empty() {
                "no changes".to_string()
            } else {
                diff.to_string()
            }),
            Err(e) => {
                // Keep what runs: restore the previous config and re-apply it.
                self.file = old;
                self.added = old_added;
                self.removed = old_removed;
                self.start_health();
                self.apply_logged("reload rollback");
                Err(format!("{e:#}"))
            }
        }
    }
}

/// Settings a reload cannot change in place.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.interfaces != new.interfaces {
        out.push("interfaces");
    }
    if old.pin_dir != new.pin_dir {
        out.push("pin-dir");
    }
    if old.api_socket != new.api_socket {
        out.push("api-socket");
    }
    if old.metrics_listen != new.metrics_listen {
        out.push("metrics-listen");
    }
    if (old.max_vips, old.max_backends, old.flow_table_size)
        != (new.max_vips, new.max_backends, new.flow_table_size)
    {
        out.push("max-vips/max-backends/flow-table-size");
    }
    out
}
