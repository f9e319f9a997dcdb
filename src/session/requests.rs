//! A client's requests — `subscribe` (with `from`, `max_hz`, `batch`),
//! `unsubscribe`, `ping` — checked against the connection's own
//! [`Subscriptions`] and token, then applied to the shard's fan-out in
//! the same call. A client's mistakes are answered here and cost the
//! fan-out nothing.

use std::collections::{HashMap, HashSet};

use super::subscriptions::Subscriptions;
use super::SessionContext;
use crate::auth::Grant;
use crate::fanout::throttle::interval_for;
use crate::fanout::{Fanout, Key, Outboxes, Subscribe, Unsubscribe};
use crate::protocol::{
    truncate, ClientMsg, ErrorCode, ProtocolError, ServerMsg, SubscribeOptions, ALL_SYMBOLS,
};
use crate::symbol::SymbolId;

/// One request being handled, and everything it may touch.
pub(super) struct Request<'a> {
    pub key: Key,
    pub subs: &'a mut Subscriptions,
    pub grant: &'a Grant,
    pub fanout: &'a mut Fanout,
    pub outboxes: &'a mut Outboxes,
    pub ctx: &'a SessionContext,
}

impl Request<'_> {
    fn error(&mut self, code: ErrorCode, message: String) {
        self.outboxes
            .push_error(self.key, &ProtocolError::new(code, message));
    }

    /// Handles one text message.
    pub fn text(self, payload: &mut [u8]) {
        #[cfg(feature = "fault-injection")]
        if payload == super::PANIC_REQUEST {
            panic!("the fault-injection request");
        }
        match ClientMsg::parse(payload) {
            Err(err) => self.outboxes.push_error(self.key, &err),
            Ok(ClientMsg::Ping { id }) => self
                .outboxes
                .push_reply(self.key, ServerMsg::Pong { id: id.as_ref() }.to_frame()),
            Ok(ClientMsg::Subscribe { symbols, options }) => self.subscribe(&symbols, &options),
            Ok(ClientMsg::Unsubscribe { symbols }) => self.unsubscribe(&symbols),
        }
    }

    /// Keeps the ids the grant covers, replying `not_entitled` for the
    /// others.
    fn entitled(&mut self, ids: Vec<SymbolId>) -> Vec<SymbolId> {
        if self.grant.all {
            return ids;
        }
        let symbols = &self.ctx.symbols;
        let (allowed, denied): (Vec<_>, Vec<_>) = ids
            .into_iter()
            .partition(|&id| self.grant.allows(&symbols.name(id)));
        if !denied.is_empty() {
            let names: Vec<String> = denied
                .iter()
                .take(10)
                .map(|&id| format!("{:?}", &*symbols.name(id)))
                .collect();
            let message = format!(
                "your token does not cover {}; it covers {}. Ask for a token that includes them",
                names.join(", "),
                self.grant.describe()
            );
            self.error(ErrorCode::NotEntitled, message);
        }
        allowed
    }

    /// Splits names into `*`, known ids (deduplicated, in request order)
    /// and unknown names, replying `unknown_symbol` for the latter.
    fn resolve(&mut self, names: &[String]) -> (bool, Vec<SymbolId>) {
        let symbols = &self.ctx.symbols;
        let mut star = false;
        let mut ids = Vec::with_capacity(names.len());
        let mut seen = HashSet::with_capacity(names.len());
        let mut unknown = Vec::new();
        for name in names {
            if name == ALL_SYMBOLS {
                star = true;
            } else if let Some(id) = symbols.id(name) {
                if seen.insert(id) {
                    ids.push(id);
                }
            } else if unknown.len() < 10 {
                unknown.push(format!("{:?}", truncate(name, 24)));
            }
        }
        if !unknown.is_empty() {
            let advice = if symbols.learns() {
                "the feed has not published it (yet); GET /symbols lists what it has, and \
                 a plain \"*\" subscription is sent each new symbol from its first tick"
            } else {
                "GET /symbols lists the symbols this server carries"
            };
            self.error(
                ErrorCode::UnknownSymbol,
                format!("unknown symbol {}; {advice}", unknown.join(", ")),
            );
        }
        (star, ids)
    }

    /// The symbol ids of a subscribe's `from`, each of which must be
    /// among the symbols the request names (any symbol, with `*`).
    fn resolve_from(
        &self,
        names: &[String],
        from: &[(String, u64)],
    ) -> Result<HashMap<SymbolId, u64>, ProtocolError> {
        if from.is_empty() {
            return Ok(HashMap::new());
        }
        let requested: HashSet<&str> = names.iter().map(String::as_str).collect();
        let star = requested.contains(ALL_SYMBOLS);
        let mut resolved = HashMap::with_capacity(from.len());
        for (name, seq) in from {
            if !star && !requested.contains(name.as_str()) {
                return Err(ProtocolError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "\"from\" names {:?}, which this request does not subscribe; \
                         list it in \"symbols\" as well",
                        truncate(name, 24)
                    ),
                ));
            }
            // A name the server does not know is in `symbols` too, and
            // answered there (`unknown_symbol`); a server that learns its
            // symbols (restarted, say) has nothing of it to resume, and
            // sends it as a snapshot when it first trades.
            if let Some(id) = self.ctx.symbols.id(name) {
                resolved.insert(id, *seq);
            }
        }
        Ok(resolved)
    }

    fn subscribe(mut self, names: &[String], options: &SubscribeOptions) {
        // Every option is checked before anything is applied.
        let from = match self.resolve_from(names, &options.from) {
            Ok(from) => from,
            Err(err) => return self.outboxes.push_error(self.key, &err),
        };
        let interval = options.max_hz.map(interval_for);
        let (mut star, ids) = self.resolve(names);
        // Read after the names are resolved: every id above is below it.
        let known = self.ctx.symbols.len();
        let mut ids = self.entitled(ids);
        if !star && ids.is_empty() {
            return;
        }
        // `*` is every symbol by name where something is kept per symbol:
        // its rate (a throttled `*`, or `*` beside throttled symbols), or
        // the entitlement (a token that covers only some symbols).
        let star_by_name = star && (interval.is_some() || self.subs.throttled() || !self.grant.all);
        if star_by_name {
            star = false;
            ids = self
                .ctx
                .symbols
                .names_between(0, known)
                .iter()
                .enumerate()
                .filter(|(_, name)| self.grant.allows(name))
                .map(|(id, _)| id as SymbolId)
                .collect();
        }
        let subs = &mut *self.subs;
        let added: Vec<SymbolId> = if subs.all() {
            Vec::new()
        } else if star {
            (0..known as SymbolId).filter(|&id| !subs.has(id)).collect()
        } else {
            ids.into_iter().filter(|&id| !subs.has(id)).collect()
        };
        let max = self.ctx.max_subscriptions;
        if !star && !subs.all() && subs.named_count() + added.len() > max {
            let advice = if star_by_name {
                "here \"*\" subscribes each symbol by name (with max_hz, or a token that \
                 covers only some symbols); name fewer symbols"
            } else {
                "unsubscribe some, subscribe to \"*\", or open another connection"
            };
            let message = format!(
                "this would make {} subscriptions on one connection, the limit is {max}; \
                 {advice}",
                subs.named_count() + added.len(),
            );
            return self.error(ErrorCode::TooManySymbols, message);
        }
        if let Some(batch) = options.batch {
            if let Some(outbox) = self.outboxes.get_mut(self.key) {
                outbox.set_batch(batch);
            }
        }
        let replaced = if star && !subs.all() {
            subs.make_all()
        } else {
            if !subs.all() {
                subs.add(&added, interval);
            }
            Vec::new()
        };
        let request = Subscribe {
            all: subs.all(),
            added,
            replaced,
            from,
            interval,
            known,
        };
        self.fanout.subscribe(self.key, request, self.outboxes);
    }

    fn unsubscribe(mut self, names: &[String]) {
        let (star, ids) = self.resolve(names);
        // Read after the names are resolved: every id above is below it.
        let known = self.ctx.symbols.len();
        if !star && ids.is_empty() {
            return;
        }
        let subs = &mut *self.subs;
        let mut request = Unsubscribe {
            known,
            ..Unsubscribe::default()
        };
        if subs.all() {
            request.leaves_all = true;
            if star {
                request.removed = (0..known as SymbolId).collect();
            } else {
                let removed: HashSet<SymbolId> = ids.iter().copied().collect();
                request.kept = (0..known as SymbolId)
                    .filter(|id| !removed.contains(id))
                    .collect();
                request.removed = ids;
            }
            subs.leave_all(&request.kept);
        } else if star {
            for (id, interval) in subs.clear_named() {
                request.removed.push(id);
                if let Some(interval) = interval {
                    request.throttled.push((id, interval));
                }
            }
        } else {
            // One pass over the subscriptions, however many are named.
            let named: HashSet<SymbolId> = ids.into_iter().collect();
            for (id, interval) in subs.remove_many(&named) {
                request.removed.push(id);
                if let Some(interval) = interval {
                    request.throttled.push((id, interval));
                }
            }
        }
        self.fanout.unsubscribe(self.key, request, self.outboxes);
    }
}
