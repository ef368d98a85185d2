//! A bounded per-destination map: cohort totals stay exact and evictions are reported.

use std::net::SocketAddr;

use tracer_tests::*;

/// Addresses (127.139.0.0/16) that no other test uses, so the totals are this
/// test's own even when other traffic runs on the host.
const OLD: &str = "127.139.96.0/19";

#[test]
fn cohort_totals_stay_exact_beyond_max_destinations() {
    let run = Run::start(
        "eviction",
        &[
            "--old",
            OLD,
            "--new",
            "127.149.0.0/16",
            "--max-destinations",
            "256",
        ],
    );
    // 1000 distinct old destinations, nothing listening: each connect is refused at once.
    for i in 0..1000u32 {
        let to: SocketAddr = format!("127.139.{}.{}:9", 100 + i / 250, 1 + i % 250)
            .parse()
            .unwrap();
        refused_connections(to, 1);
    }
    let out = run.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.cohort("old"), (1000, 0, 1000, 0, 0));
    let evicted = n(&out.summary()["evicted"]);
    // 256 destinations get a row each, 64 more (a quarter, at least 64) fit the LRU map.
    assert!(evicted >= 1000 - 256 - 64, "evicted {evicted}");
    assert!(evicted <= 1000, "evicted {evicted}");
    let events = out.events("evicted");
    assert_eq!(events.len(), 1, "one evicted event when it first happens");
    assert!(n(&events[0]["destinations"]) > 0);
}
