//! `chorus simulate` as a planner runs it: a sweep, its table, its JSON and its chart; bad
//! settings refused with a clear error.
#![allow(clippy::unwrap_used)]

use chorus_testkit::{chorus, s};

/// A small sweep (two edges, a tracker each), with `more` arguments.
fn sweep(more: &[&str]) -> std::process::Output {
    let args = [
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
    ];
    chorus(&args.iter().chain(more).copied().collect::<Vec<_>>())
}

#[test]
fn a_sweep_prints_a_row_per_scenario_and_writes_json_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = sweep(&["--json", s(&json), "--svg", s(&svg)]);
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
    // The scenarios ran side by side (one per core by default); one at a time, every figure
    // is the same.
    let one = dir.path().join("one.json");
    let out = sweep(&["--jobs", "1", "--json", s(&one)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), table);
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&json).unwrap());
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
        (&["simulate", "--jobs", "0"][..], "--jobs"),
        (&["simulate", "--sweep", "preload=maybe"][..], "preload=maybe: on or off"),
        (&["simulate", "--listeners", "10", "--seeders", "10"][..], "--seeders 10: fewer than --listeners (10)"),
    ] {
        let out = chorus(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Listeners who arrive with warm caches (what earlier days left) seed the tracks they hold:
/// against the same run with cold caches the edges carry a smaller share, the listeners' own
/// caches and their peers more, and the announces name what the caches hold.
#[test]
fn warm_caches_seed_and_take_load_off_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = chorus(&[
        "simulate",
        "--listeners",
        "400",
        "--tracks",
        "400",
        "--minutes",
        "8",
        "--arrive-minutes",
        "2",
        "--segments",
        "5-8",
        "--sweep",
        "warm-tracks=0,60",
        "--json",
        s(&json),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let (cold, warm) = (&doc[0]["report"], &doc[1]["report"]);
    let share = |r: &serde_json::Value, of: &str| {
        let b = &r["bytes"];
        let total = ["edge", "peer", "cache"].iter().map(|k| b[*k].as_f64().unwrap()).sum::<f64>();
        b[of].as_f64().unwrap() / total
    };
    assert!(
        share(warm, "edge") < share(cold, "edge"),
        "edge share: warm {} cold {}",
        share(warm, "edge"),
        share(cold, "edge")
    );
    assert!(share(warm, "cache") > share(cold, "cache"));
    // Each serving listener named its 60 warm tracks at least once.
    let names = |r: &serde_json::Value| r["announced_names"].as_u64().unwrap();
    assert!(names(warm) > names(cold) + 60 * 100, "names: warm {} cold {}", names(warm), names(cold));
}
