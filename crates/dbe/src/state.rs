//! The state file: the safety state that must outlive the process (a restart, a crash, a power cut).
//!
//! It holds the bridge's [`Latches`] — `stop` and the critical latches — as a small JSON object in
//! `<state dir>/state.json`, written atomically (temporary file, fsync, rename, fsync of the folder) whenever the
//! latches change. At start-up the next bridge is built from it, so neither `RESTART` nor a reboot clears a latch:
//! only `START` does, once the condition is gone.
//!
//! A state file that cannot be read or parsed is not a reason to forget: DBE starts **stopped** and says why.
//! Where it lives: `state.dir` in the config, else systemd's `$STATE_DIRECTORY` (`StateDirectory=dbe` in
//! `dist/dbe.service`, i.e. `/var/lib/dbe`), else nowhere (a warning: latches are then lost with the process).

use std::path::{Path, PathBuf};

use dbe_core::supervisor::Latches;
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "state.json";
const VERSION: u32 = 1;

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    stopped: bool,
    critical_cell_over_voltage: bool,
    critical_cell_under_voltage: bool,
    design_mismatch: bool,
}

impl From<Latches> for Saved {
    fn from(l: Latches) -> Self {
        Saved {
            version: VERSION,
            stopped: l.stopped,
            critical_cell_over_voltage: l.critical_cell_over_voltage,
            critical_cell_under_voltage: l.critical_cell_under_voltage,
            design_mismatch: l.design_mismatch,
        }
    }
}

impl From<&Saved> for Latches {
    fn from(s: &Saved) -> Self {
        Latches {
            stopped: s.stopped,
            critical_cell_over_voltage: s.critical_cell_over_voltage,
            critical_cell_under_voltage: s.critical_cell_under_voltage,
            design_mismatch: s.design_mismatch,
        }
    }
}

/// The state directory to use: the configured one, else systemd's.
pub fn dir(configured: &str) -> Option<PathBuf> {
    if !configured.is_empty() {
        return Some(PathBuf::from(configured));
    }
    // systemd may list several directories separated by ':'; the first is ours.
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| v.to_str().and_then(|s| s.split(':').next()).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

/// The state file of one daemon, and what was last written to it.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    saved: Latches,
    /// The last write failed: try again on the next change or check.
    dirty: bool,
}

/// What loading found.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    /// No file yet (first run): nothing latched.
    Fresh,
    /// The latches of the previous run.
    Restored(Latches),
    /// The file is there but unreadable or malformed: start stopped.
    Unreadable(String),
}

impl StateFile {
    /// Reads `dir/state.json`. The latches to start from are in the second value (stopped when unreadable).
    pub fn load(dir: &Path) -> (StateFile, Loaded) {
        let path = dir.join(FILE_NAME);
        let loaded = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::Fresh,
            Err(e) => Loaded::Unreadable(format!("{}: {e}", path.display())),
            Ok(text) => match serde_json::from_str::<Saved>(&text) {
                Ok(s) if s.version == VERSION => Loaded::Restored((&s).into()),
                Ok(s) => Loaded::Unreadable(format!("{}: version {}, expected {VERSION}", path.display(), s.version)),
                Err(e) => Loaded::Unreadable(format!("{}: {e}", path.display())),
            },
        };
        let saved = match &loaded {
            Loaded::Fresh => Latches::default(),
            Loaded::Restored(l) => *l,
            Loaded::Unreadable(_) => Latches::default(),
        };
        // A bad file is replaced by a good one at the first save, whatever the latches are then.
        let dirty = matches!(loaded, Loaded::Unreadable(_));
        (StateFile { path, saved, dirty }, loaded)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `latches` if they differ from what the file holds (or the last write failed). `Ok(true)` when written.
    pub fn save(&mut self, latches: Latches) -> std::io::Result<bool> {
        if latches == self.saved && !self.dirty {
            return Ok(false);
        }
        let text = serde_json::to_string(&Saved::from(latches)).expect("plain struct serialises");
        match dbe_services::config::write_atomic(&self.path, &(text + "\n")) {
            Ok(()) => {
                self.saved = latches;
                self.dirty = false;
                Ok(true)
            }
            Err(e) => {
                self.dirty = true;
                Err(e)
            }
        }
    }
}

impl Loaded {
    /// The latches the next bridge starts from.
    pub fn latches(&self) -> Latches {
        match self {
            Loaded::Fresh => Latches::default(),
            Loaded::Restored(l) => *l,
            Loaded::Unreadable(_) => Latches { stopped: true, ..Latches::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn latches_round_trip_and_only_changes_are_written() {
        let tmp = tmp();
        let dir = tmp.path();
        let (mut f, loaded) = StateFile::load(dir);
        assert_eq!(loaded, Loaded::Fresh);
        assert!(!f.save(Latches::default()).unwrap(), "nothing to write");
        let l = Latches { stopped: true, critical_cell_over_voltage: true, ..Default::default() };
        assert!(f.save(l).unwrap());
        assert!(!f.save(l).unwrap());
        let (_, loaded) = StateFile::load(dir);
        assert_eq!(loaded, Loaded::Restored(l));
        assert_eq!(loaded.latches(), l);
    }

    #[test]
    fn an_unreadable_file_starts_stopped_and_is_rewritten() {
        for bad in [
            "{not json",
            "{\"version\": 9, \"stopped\": false, \"critical_cell_over_voltage\": false, \
                     \"critical_cell_under_voltage\": false, \"design_mismatch\": false}",
            "{\"stopped\": 1}",
        ] {
            let tmp = tmp();
            let dir = tmp.path();
            std::fs::write(dir.join(FILE_NAME), bad).unwrap();
            let (mut f, loaded) = StateFile::load(dir);
            assert!(matches!(loaded, Loaded::Unreadable(ref why) if why.contains("state.json")), "{loaded:?}");
            assert_eq!(loaded.latches(), Latches { stopped: true, ..Default::default() });
            assert!(f.save(loaded.latches()).unwrap(), "a good file replaces the bad one");
            assert_eq!(StateFile::load(dir).1, Loaded::Restored(loaded.latches()));
        }
    }

    #[test]
    fn a_failed_write_is_retried() {
        let tmp = tmp();
        let dir = tmp.path();
        let (mut f, _) = StateFile::load(&dir.join("gone"));
        let l = Latches { stopped: true, ..Default::default() };
        assert!(f.save(l).is_err(), "the folder does not exist");
        std::fs::create_dir_all(dir.join("gone")).unwrap();
        assert!(f.save(l).unwrap(), "written on the next try");
    }
}
