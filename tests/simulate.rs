//! `chorus simulate` as a planner runs it: a sweep, its table, its JSON and its chart; bad
//! settings refused with a clear error.
#![allow(clippy::unwrap_used)]

use chorus_testkit::{chorus, s};

#[test]
fn a_sweep_prints_a_row_per_scenario_and_writes_json_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = chorus(&[
        "simulate",
        "--listeners",
        "200",
        "--tracks",
        "100",
        "--minutes",
        "3",
        "--arrive-minutes",
        "1",
        "--segments",
        "5-8",
        "--sweep",
        "edges=1,2",
        "--tracker",
        "per-edge",
        "--json",
        s(&json),
        "--svg",
        s(&svg),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("edge%"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("edges=1")) && table.lines().any(|l| l.starts_with("edges=2")),
        "{table}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("simulated minutes") && stderr.contains("done in"), "progress: {stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(doc.as_array().unwrap().len(), 2);
    assert_eq!(doc[1]["report"]["edges"].as_array().unwrap().len(), 2);
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(chart.matches("<polyline").count(), 2);
}

#[test]
fn bad_settings_are_refused_with_what_is_wrong() {
    for (args, says) in [
        (&["simulate", "--sweep", "colour=1,2"][..], "one of listeners"),
        (&["simulate", "--mobile", "1.5"][..], "--mobile"),
        (&["simulate", "--quality", "9"][..], "--quality 9"),
        (&["simulate", "--rtt-ms", "80-20"][..], "80 is more than 20"),
        (&["simulate", "--tracker", "gossip"][..], "shared or per-edge"),
        (&["simulate", "--sweep", "tracker=sharde"][..], "shared or per-edge"),
        (&["simulate", "--sweep", "mobile=0.5,2"][..], "mobile=2"),
        (&["simulate", "--minutes", "inf"][..], "--minutes inf"),
    ] {
        let out = chorus(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
