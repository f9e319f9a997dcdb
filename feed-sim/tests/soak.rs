//! `feed-sim soak` against the real tickcast server, started in this
//! process on 127.0.0.1:0 (so `--server-pid` is this process): every
//! connection made must be accounted for by how it ended, every malformed
//! request must get its `error` reply, and once the clients are gone the
//! process must hold exactly the file descriptors it held before.
//!
//! One test only: the descriptor count is the whole process's, and a
//! second test running beside it would open descriptors of its own.

mod common;

use common::{soak_args, start_server};
use feed_sim::soak;

#[test]
fn a_short_churn_accounts_for_every_connection_and_gives_back_its_descriptors() {
    let server = start_server();
    let pid = std::process::id().to_string();
    let args = soak_args(
        &server.url,
        &[
            "--server-pid",
            &pid,
            "--clients",
            "50",
            "--warmup",
            "1",
            "--duration",
            "3",
            "--max-lifetime",
            "1",
            "--seed",
            "7",
            "--settle-timeout",
            "30",
        ],
    );
    let report = soak::measure(&args).expect("soak run");
    server.stop();
    print!("{}", report.render());

    assert_eq!(
        report.connect_failures, 0,
        "{:?}",
        report.connect_failure_reasons
    );
    assert_eq!(report.connections_made, report.connections_attempted);
    // Churn: more connections than fit at once.
    assert!(report.connections_made > 50, "{}", report.connections_made);
    // Every connection ended exactly one way, and the server closed none.
    assert_eq!(report.endings.total(), report.connections_made);
    assert!(
        report.endings.server_closed.is_empty(),
        "{:?}",
        report.endings
    );
    assert_eq!(report.endings.lost, 0);
    assert!(report.endings.client_closed > 0 && report.endings.client_dropped > 0);
    // Every malformed request, and only those, got an error reply, with
    // the right code; every other request got its reply.
    assert!(report.errors_expected > 0);
    assert_eq!(report.errors_seen, report.errors_expected);
    assert_eq!(report.error_code_mismatches, 0);
    assert!(
        report.replies_missing.is_empty(),
        "{:?}",
        report.replies_missing
    );
    assert!(report.messages_received > report.connections_made);
    assert!(report.behaviour.stalled > 0 && report.behaviour.subscribed_all > 0);

    assert_eq!(report.connections_left, Some(0));
    assert!(report.peak.fds > report.baseline.fds);
    assert_eq!(
        report.after.fds, report.baseline.fds,
        "descriptors did not come back: {:?}",
        report.verdict
    );
    assert!(report.verdict.passed, "{:?}", report.verdict);
}
