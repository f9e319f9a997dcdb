//! One churning client: the plan it draws (what it subscribes to, what
//! else it asks, how it leaves), its connection, and how it reads the
//! server's frames and counts what it saw into the run's `Shared`
//! tallies.

use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::Rng as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use tickcast::wire::frame::{client_frame, frame_len, opcode, split_server_frame};

use super::{Known, Shared, REPLY_TIMEOUT};
use crate::net;
use crate::server_msg::close_label;
use crate::ws;

/// Bytes a client reads into at once; grows for a larger frame.
const READ_BUFFER: usize = 16 * 1024;

/// The largest server frame a client accepts (a `subscribed` reply to
/// `*` over many symbols is the largest message a server sends).
const MAX_FRAME: usize = 64 << 20;

/// A malformed request and the error `code` it must be answered with.
#[derive(Clone, Copy, Debug)]
struct Garbage {
    request: &'static str,
    code: &'static str,
}

const GARBAGE: [Garbage; 5] = [
    Garbage {
        request: r#"{"op":"subscribe","symbols":["#,
        code: "bad_json",
    },
    Garbage {
        request: r#"{"op":"subscribe","symbols":["NOT-A-SYMBOL"]}"#,
        code: "unknown_symbol",
    },
    Garbage {
        request: r#"{"op":"launch","symbols":["*"]}"#,
        code: "unknown_op",
    },
    Garbage {
        request: r#"["op","subscribe"]"#,
        code: "bad_request",
    },
    Garbage {
        request: r#"{"op":"subscribe","symbols":["*"],"max_hz":-1}"#,
        code: "bad_request",
    },
];

/// How a client leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leave {
    /// Sends a close frame and waits for the server's.
    Close,
    /// Drops the TCP connection.
    Drop,
}

/// What one client does, drawn at random.
#[derive(Debug)]
pub(super) struct Plan {
    subscribe: serde_json::Value,
    all: bool,
    max_hz: bool,
    batch: bool,
    from: bool,
    /// Reading time, in three parts with the optional requests between.
    read_for: [Duration; 3],
    garbage: Option<Garbage>,
    ping: bool,
    unsubscribe: Option<serde_json::Value>,
    stall: Option<Duration>,
    leave: Leave,
}

impl Plan {
    pub(super) fn random(rng: &mut SmallRng, symbols: &[Known], max_lifetime: Duration) -> Plan {
        let all = rng.random_bool(0.15);
        let chosen: Vec<&Known> = if all {
            Vec::new()
        } else {
            let k = rng.random_range(1..=symbols.len().min(8));
            symbols.choose_multiple(rng, k).collect()
        };
        let names: Vec<&str> = if all {
            vec!["*"]
        } else {
            chosen.iter().map(|k| k.sym.as_str()).collect()
        };
        let mut subscribe = json!({"op": "subscribe", "symbols": names});
        let max_hz = rng.random_bool(0.25);
        if max_hz {
            let hz = [1, 2, 4, 10, 50][rng.random_range(0..5)];
            subscribe["max_hz"] = json!(hz);
        }
        let batch = rng.random_bool(0.2);
        if batch {
            subscribe["batch"] = json!(true);
        }
        let from = !all && rng.random_bool(0.2);
        if from {
            // Some replayable, some too old or too new (a reset).
            let entries: serde_json::Map<_, _> = chosen
                .iter()
                .map(|k| {
                    let seq = match rng.random_range(0..4) {
                        0 => 0,
                        1 => k.seq + 1_000_000,
                        _ => k.seq.saturating_sub(rng.random_range(0..300)),
                    };
                    (k.sym.clone(), json!(seq))
                })
                .collect();
            subscribe["from"] = serde_json::Value::Object(entries);
        }
        let lifetime = max_lifetime.mul_f64(rng.random::<f64>());
        let read_for = [
            lifetime.mul_f64(0.4),
            lifetime.mul_f64(0.3),
            lifetime.mul_f64(0.3),
        ];
        let garbage = rng
            .random_bool(0.2)
            .then(|| *GARBAGE.choose(rng).expect("garbage to choose from"));
        let ping = rng.random_bool(0.2);
        let unsubscribe = rng.random_bool(0.3).then(|| {
            let mut names = names.clone();
            names.shuffle(rng);
            names.truncate(rng.random_range(1..=names.len()));
            json!({"op": "unsubscribe", "symbols": names})
        });
        let stall = rng
            .random_bool(0.2)
            .then(|| Duration::from_millis(rng.random_range(100..=2000)));
        let leave = if rng.random_bool(0.5) {
            Leave::Close
        } else {
            Leave::Drop
        };
        Plan {
            subscribe,
            all,
            max_hz,
            batch,
            from,
            read_for,
            garbage,
            ping,
            unsubscribe,
            stall,
            leave,
        }
    }

    /// Makes warm-up client `i` cover a behaviour a random plan might
    /// miss: together the first clients use every option, every kind of
    /// malformed request and both ways of leaving.
    pub(super) fn cover_behaviour(&mut self, i: usize, symbols: &[Known]) {
        let first = &symbols[0].sym;
        match i % 4 {
            0 => {
                self.subscribe = json!({"op": "subscribe", "symbols": ["*"], "batch": true});
                self.all = true;
                self.unsubscribe = Some(json!({"op": "unsubscribe", "symbols": ["*"]}));
            }
            1 => {
                self.subscribe = json!({"op": "subscribe", "symbols": [first], "max_hz": 4});
                self.max_hz = true;
                self.ping = true;
            }
            2 => {
                self.subscribe = json!({"op": "subscribe", "symbols": [first],
                                        "from": {first: symbols[0].seq.saturating_sub(1)}});
                self.from = true;
            }
            _ => self.stall = Some(Duration::from_millis(100)),
        }
        self.garbage = Some(GARBAGE[i % GARBAGE.len()]);
        self.leave = if i.is_multiple_of(2) {
            Leave::Close
        } else {
            Leave::Drop
        };
    }
}

/// A reply a client waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Subscribed,
    Unsubscribed,
    Pong,
    Error(&'static str),
    Close,
}

impl Want {
    fn name(self) -> &'static str {
        match self {
            Want::Subscribed => "subscribed",
            Want::Unsubscribed => "unsubscribed",
            Want::Pong => "pong",
            Want::Error(_) => "error",
            Want::Close => "close",
        }
    }

    fn prefix(self) -> &'static [u8] {
        match self {
            Want::Subscribed => br#"{"type":"subscribed","#,
            Want::Unsubscribed => br#"{"type":"unsubscribed","#,
            Want::Pong => br#"{"type":"pong""#,
            Want::Error(_) => br#"{"type":"error","#,
            Want::Close => b"",
        }
    }
}

/// Why a connection ended before the client chose to leave.
enum Ended {
    /// The server sent a close frame (`code reason`).
    ServerClosed(String),
    /// End of stream or an error without a close frame.
    Lost,
}

/// A connected client's socket and the bytes read and not yet handled.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    end: usize,
}

impl Conn {
    async fn send_text(&mut self, text: &[u8]) -> Result<(), Ended> {
        self.stream
            .write_all(&client_frame(opcode::TEXT, text))
            .await
            .map_err(|_| Ended::Lost)
    }

    /// Reads and counts frames until `want` arrives (`Ok(true)`), or
    /// until `until` (`Ok(false)`); answers pings on the way.
    async fn read_until(
        &mut self,
        shared: &Shared,
        want: Option<Want>,
        until: Instant,
    ) -> Result<bool, Ended> {
        loop {
            while let Some(frame) =
                split_server_frame(&self.buf[..self.end], MAX_FRAME).map_err(|_| Ended::Lost)?
            {
                let payload = self.buf[frame.payload.clone()].to_vec();
                self.buf.copy_within(frame.len..self.end, 0);
                self.end -= frame.len;
                match frame.opcode {
                    opcode::TEXT => {
                        Shared::add(&shared.messages, 1);
                        let is_error = payload.starts_with(Want::Error("").prefix());
                        if is_error {
                            Shared::add(&shared.errors_seen, 1);
                        }
                        if let Some(want) = want.filter(|w| *w != Want::Close) {
                            if payload.starts_with(want.prefix()) {
                                if let Want::Error(code) = want {
                                    let expected = format!(r#""code":"{code}""#);
                                    if !String::from_utf8_lossy(&payload).contains(&expected) {
                                        Shared::add(&shared.error_code_mismatches, 1);
                                    }
                                }
                                return Ok(true);
                            }
                        }
                    }
                    opcode::CLOSE => return Err(Ended::ServerClosed(close_label(&payload))),
                    opcode::PING => self
                        .stream
                        .write_all(&client_frame(opcode::PONG, &payload))
                        .await
                        .map_err(|_| Ended::Lost)?,
                    _ => {}
                }
            }
            if self.end == self.buf.len() {
                let need = frame_len(&self.buf[..self.end]).unwrap_or(self.buf.len() * 2);
                self.buf.resize(need.max(self.buf.len() + 1), 0);
            }
            match tokio::time::timeout_at(until, self.stream.read(&mut self.buf[self.end..])).await
            {
                Err(_) => return Ok(false),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Ended::Lost),
                Ok(Ok(n)) => self.end += n,
            }
        }
    }

    /// Sends `request` and waits for `want`, counting it as missing if it
    /// does not come in time.
    async fn request(&mut self, shared: &Shared, request: &[u8], want: Want) -> Result<(), Ended> {
        self.send_text(request).await?;
        if !self
            .read_until(shared, Some(want), Instant::now() + REPLY_TIMEOUT)
            .await?
        {
            count_missing(shared, want);
        }
        Ok(())
    }
}

/// Runs a client with the connect slot `connecting` held only until its
/// handshake is done.
pub(super) async fn run_client_gated(
    shared: Rc<Shared>,
    plan: Plan,
    n: u64,
    connecting: Option<tokio::sync::SemaphorePermit<'_>>,
) {
    Shared::add(&shared.started, 1);
    let result = tokio::time::timeout(REPLY_TIMEOUT * 2, connect(&shared, n)).await;
    drop(connecting);
    let conn = match result {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return count_connect_failure(&shared, format!("{e:#}")),
        Err(_) => {
            return count_connect_failure(
                &shared,
                format!("no upgrade within {:?}", REPLY_TIMEOUT * 2),
            )
        }
    };
    live(&shared, plan, conn).await;
}

/// Counts a connect or handshake that failed, by its error text.
fn count_connect_failure(shared: &Shared, reason: String) {
    *shared
        .connect_failures
        .borrow_mut()
        .entry(reason)
        .or_default() += 1;
}

/// Counts a reply that did not come within [`REPLY_TIMEOUT`].
fn count_missing(shared: &Shared, want: Want) {
    *shared
        .replies_missing
        .borrow_mut()
        .entry(want.name().to_string())
        .or_default() += 1;
}

/// Connects from the `n`th source address and upgrades.
async fn connect(shared: &Shared, n: u64) -> anyhow::Result<Conn> {
    let source = net::source_ip(n, shared.source_ips);
    let stream = net::connect_from(shared.target.addr, source).await?;
    stream.set_nodelay(true).context("nodelay")?;
    let ws = ws::upgrade(stream, &shared.target, None).await?;
    let parts = ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| anyhow::anyhow!("the upgraded connection is not a TcpStream"))?;
    let leftover: Bytes = parts.read_buf;
    let mut buf = vec![0u8; READ_BUFFER.max(leftover.len())];
    buf[..leftover.len()].copy_from_slice(&leftover);
    Ok(Conn {
        stream: parts.io.into_inner(),
        buf,
        end: leftover.len(),
    })
}

/// A connected client's life: plays `plan`, then records how it ended.
async fn live(shared: &Shared, plan: Plan, mut conn: Conn) {
    Shared::add(&shared.made, 1);
    shared.active.set(shared.active.get() + 1);
    {
        let mut behaviour = shared.behaviour.borrow_mut();
        behaviour.subscribed_all += u64::from(plan.all);
        behaviour.with_max_hz += u64::from(plan.max_hz);
        behaviour.with_batch += u64::from(plan.batch);
        behaviour.with_from += u64::from(plan.from);
    }
    let leave = plan.leave;
    let ended = play(shared, plan, &mut conn).await;
    shared.active.set(shared.active.get() - 1);
    let mut endings = shared.endings.borrow_mut();
    match ended {
        Ok(()) if leave == Leave::Close => endings.client_closed += 1,
        Ok(()) => {
            endings.client_dropped += 1;
            // Dropping the socket with unread data makes the kernel send a
            // reset: the abrupt end this behaviour stands for.
            drop(conn);
        }
        Err(Ended::ServerClosed(label)) => *endings.server_closed.entry(label).or_default() += 1,
        Err(Ended::Lost) => endings.lost += 1,
    }
}

async fn play(shared: &Shared, plan: Plan, conn: &mut Conn) -> Result<(), Ended> {
    // Reading stops early when the churn ends.
    let until = |wait: Duration| {
        let at = Instant::now() + wait;
        shared
            .deadline
            .get()
            .map_or(at, |deadline| at.min(deadline))
    };
    let subscribe = serde_json::to_vec(&plan.subscribe).expect("a request serializes");
    conn.request(shared, &subscribe, Want::Subscribed).await?;
    conn.read_until(shared, None, until(plan.read_for[0]))
        .await?;
    if let Some(garbage) = plan.garbage {
        Shared::add(&shared.errors_expected, 1);
        conn.request(
            shared,
            garbage.request.as_bytes(),
            Want::Error(garbage.code),
        )
        .await?;
    }
    if plan.ping {
        shared.behaviour.borrow_mut().pinged += 1;
        conn.request(shared, br#"{"op":"ping","id":"soak"}"#, Want::Pong)
            .await?;
    }
    conn.read_until(shared, None, until(plan.read_for[1]))
        .await?;
    if let Some(unsubscribe) = &plan.unsubscribe {
        shared.behaviour.borrow_mut().unsubscribed += 1;
        let unsubscribe = serde_json::to_vec(unsubscribe).expect("a request serializes");
        conn.request(shared, &unsubscribe, Want::Unsubscribed)
            .await?;
    }
    conn.read_until(shared, None, until(plan.read_for[2]))
        .await?;
    if let Some(stall) = plan.stall {
        shared.behaviour.borrow_mut().stalled += 1;
        tokio::time::sleep(stall).await;
    }
    if plan.leave == Leave::Close {
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"soak client leaving");
        conn.stream
            .write_all(&client_frame(opcode::CLOSE, &close))
            .await
            .map_err(|_| Ended::Lost)?;
        // Reads on to the server's answering close.
        match conn
            .read_until(shared, Some(Want::Close), Instant::now() + REPLY_TIMEOUT)
            .await
        {
            Err(Ended::ServerClosed(_)) => {}
            Ok(_) | Err(Ended::Lost) => count_missing(shared, Want::Close),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;

    #[test]
    fn plans_are_reproducible_and_stay_within_the_lifetime() {
        let symbols: Vec<Known> = ["AAPL", "MSFT", "NVDA"]
            .iter()
            .map(|s| Known {
                sym: s.to_string(),
                seq: 500,
            })
            .collect();
        let max = Duration::from_secs(2);
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..200)
                .map(|_| Plan::random(&mut rng, &symbols, max))
                .collect::<Vec<_>>()
        };
        let (a, b) = (draw(7), draw(7));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.subscribe, y.subscribe);
            assert_eq!(x.leave, y.leave);
        }
        for plan in &a {
            assert!(plan.read_for.iter().sum::<Duration>() <= max);
            let names = plan.subscribe["symbols"].as_array().unwrap();
            assert!(!names.is_empty());
        }
        // Every behaviour shows up over 200 plans.
        assert!(a.iter().any(|p| p.all) && a.iter().any(|p| p.from));
        assert!(a.iter().any(|p| p.leave == Leave::Drop) && a.iter().any(|p| p.stall.is_some()));
    }
}
