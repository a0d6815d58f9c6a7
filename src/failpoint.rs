//! Fault injection for the live tests: `REPLTOOL_FAILPOINT=NAME` ends the process at the named
//! point (as a kill -9 of repltool would), `NAME:pause=MS` sleeps there (time for a test to cut
//! an SSH link). Unset, a failpoint costs one environment lookup.

/// Named points: `execute-after-wave-N` (a plan's wave N done; wave 0 writes configs and
/// restarts), `promote-after-target` (the new master promoted, nobody re-pointed yet),
/// `promote-before-writable` (everything ready, the target not writable yet: the writer
/// endpoint already points at it).
pub fn hit(name: &str) {
    let Ok(v) = std::env::var("REPLTOOL_FAILPOINT") else {
        return;
    };
    let (point, action) = v.split_once(':').unwrap_or((v.as_str(), ""));
    if point != name {
        return;
    }
    match action
        .strip_prefix("pause=")
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        Some(ms) => {
            crate::report::say(format!("failpoint {name}: pausing {ms} ms"));
            std::thread::sleep(std::time::Duration::from_millis(ms))
        }
        None => {
            crate::report::say(format!("failpoint {name}: exiting"));
            std::process::exit(101);
        }
    }
}
