//! The client's states (RFC 2131 §4.4, figure 5) without any I/O: the driver feeds in the time, the packets
//! that arrive and a release request, and carries out the actions that come back. Time is an argument, so the
//! tests below live through a whole lease (T1, T2, expiry) without waiting for it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::message::{self, Kind, Outgoing, Reply};

/// First retransmission delay in SELECTING and REQUESTING, doubled per try up to [`MAX_BACKOFF`] and moved by up
/// to a second either way (RFC 2131 §4.1), so that clients that started together do not stay in step.
const FIRST_BACKOFF: Duration = Duration::from_secs(4);
const MAX_BACKOFF: Duration = Duration::from_secs(64);
const JITTER_MS: i64 = 1000;
/// REQUESTs sent for one offer before starting over with a DISCOVER.
const MAX_REQUESTS: u32 = 4;
/// RENEWING and REBINDING retransmit after half the time left, but not sooner than this (RFC 2131 §4.4.5).
const MIN_RENEW_RETRY: Duration = Duration::from_secs(60);
/// Lease time when an ACK has none (a server must send it; dnsmasq's default).
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// A server that hands out near-zero leases must not make the client renew in a loop.
const MIN_T1: Duration = Duration::from_secs(1);

/// A bound address and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// The server identifier: where renewals and the release go.
    pub server: Ipv4Addr,
    /// `None`: an infinite lease, never renewed.
    pub duration: Option<Duration>,
    /// Renewal (T1) and rebinding (T2) times, from `start`.
    pub t1: Duration,
    pub t2: Duration,
    /// When the lease's clock started: when the REQUEST it answers was first sent (RFC 2131 §4.4.1).
    pub start: Instant,
}

impl Lease {
    pub fn expires(&self) -> Option<Instant> {
        self.duration.map(|d| self.start + d)
    }

    /// Time left at `now`; `None` for an infinite lease.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.expires().map(|e| e.saturating_duration_since(now))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
    Released,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Broadcast,
    Server(Ipv4Addr),
}

/// Why an address had to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// The server refused it (DHCPNAK), with its message if it gave one.
    Refused(Option<String>),
    Expired,
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>, Dest),
    /// Configure this lease on the interface (replacing any other address the client configured).
    Configure(Lease),
    /// The configured lease was extended; `rebinding` when another server than its own (or its own, by
    /// broadcast) answered.
    Extend {
        lease: Lease,
        rebinding: bool,
    },
    /// Stop using this lease's address: remove it.
    Deconfigure(Lease, Loss),
}

pub struct Machine {
    mac: [u8; 6],
    hostname: String,
    state: State,
    xid: u32,
    /// When this acquisition or renewal began (the `secs` field).
    began: Instant,
    /// When the first REQUEST of this exchange went out: the start of the lease it brings.
    requested_at: Instant,
    /// Transmissions so far in this state.
    tries: u32,
    next: Option<Instant>,
    /// SELECTING's choice, kept for the REQUEST and as a fallback for options the ACK leaves out.
    offer: Option<Reply>,
    lease: Option<Lease>,
    /// NAKs since the last binding: repeated refusals back off instead of looping.
    refusals: u32,
    rng: fastrand::Rng,
}

impl Machine {
    /// A client in INIT whose first DISCOVER is due at `now`.
    pub fn new(mac: [u8; 6], hostname: &str, now: Instant) -> Machine {
        Machine::with_rng(mac, hostname, now, fastrand::Rng::new())
    }

    pub fn with_rng(mac: [u8; 6], hostname: &str, now: Instant, rng: fastrand::Rng) -> Machine {
        // RFC 2131 §4.4.1 suggests waiting 1 to 10 s before the first DISCOVER so that machines powered on
        // together spread out; the random retransmission delays already do that, and a booting node should not
        // idle.
        Machine {
            mac,
            hostname: hostname.to_owned(),
            state: State::Init,
            xid: 0,
            began: now,
            requested_at: now,
            tries: 0,
            next: Some(now),
            offer: None,
            lease: None,
            refusals: 0,
            rng,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    #[cfg(test)]
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// When [`Machine::on_timer`] wants to run next; `None`: only a packet or a release can change anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Retransmissions and state changes that are due at `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        if self.next.is_none_or(|n| now < n) {
            return Vec::new();
        }
        match self.state {
            State::Init => self.discover(now),
            State::Selecting => {
                self.tries += 1;
                self.next = Some(now + self.backoff());
                vec![self.send(Kind::Discover, Dest::Broadcast, now)]
            }
            State::Requesting if self.tries >= MAX_REQUESTS => self.discover(now),
            State::Requesting => {
                self.tries += 1;
                self.next = Some(now + self.backoff());
                vec![self.send(Kind::Request, Dest::Broadcast, now)]
            }
            State::Bound => {
                let Some(lease) = &self.lease else {
                    return self.discover(now);
                };
                let server = lease.server;
                self.begin_exchange(State::Renewing, now);
                self.schedule_retry(now);
                vec![self.send(Kind::Request, Dest::Server(server), now)]
            }
            State::Renewing => {
                let Some(lease) = &self.lease else {
                    return self.discover(now);
                };
                let server = lease.server;
                if now >= lease.start + lease.t2 {
                    self.begin_exchange(State::Rebinding, now);
                    self.schedule_retry(now);
                    return vec![self.send(Kind::Request, Dest::Broadcast, now)];
                }
                self.tries += 1;
                self.schedule_retry(now);
                vec![self.send(Kind::Request, Dest::Server(server), now)]
            }
            State::Rebinding => {
                let Some(lease) = self.lease.clone() else {
                    return self.discover(now);
                };
                if lease.expires().is_some_and(|e| now >= e) {
                    self.lease = None;
                    let mut actions = vec![Action::Deconfigure(lease, Loss::Expired)];
                    actions.extend(self.discover(now));
                    return actions;
                }
                self.tries += 1;
                self.schedule_retry(now);
                vec![self.send(Kind::Request, Dest::Broadcast, now)]
            }
            State::Released => {
                self.next = None;
                Vec::new()
            }
        }
    }

    /// A datagram that arrived at `now` on the client's port.
    pub fn on_packet(&mut self, now: Instant, packet: &[u8]) -> Vec<Action> {
        let Some(reply) = message::parse(packet, self.mac) else {
            return Vec::new();
        };
        if reply.xid != self.xid {
            return Vec::new();
        }
        match (self.state, reply.kind) {
            (State::Selecting, Some(Kind::Offer)) => {
                if reply.yiaddr.is_none() || reply.server.is_none() {
                    return Vec::new();
                }
                self.offer = Some(reply);
                self.state = State::Requesting;
                self.tries = 0;
                self.requested_at = now;
                self.next = Some(now + self.backoff());
                vec![self.send(Kind::Request, Dest::Broadcast, now)]
            }
            (State::Requesting, Some(Kind::Ack)) => {
                let Some(lease) = self.lease_from(&reply, None) else {
                    return Vec::new();
                };
                self.bind(lease.clone());
                vec![Action::Configure(lease)]
            }
            (State::Renewing | State::Rebinding, Some(Kind::Ack)) => {
                let Some(old) = self.lease.clone() else {
                    return Vec::new();
                };
                let Some(lease) = self.lease_from(&reply, Some(&old)) else {
                    return Vec::new();
                };
                let rebinding = self.state == State::Rebinding;
                self.bind(lease.clone());
                if lease.addr == old.addr && lease.prefix == old.prefix {
                    vec![Action::Extend { lease, rebinding }]
                } else {
                    vec![Action::Configure(lease)]
                }
            }
            (State::Requesting | State::Renewing | State::Rebinding, Some(Kind::Nak)) => {
                self.refusals += 1;
                let mut actions = Vec::new();
                if let Some(lease) = self.lease.take() {
                    actions.push(Action::Deconfigure(lease, Loss::Refused(reply.message)));
                }
                // The first refusal starts over at once (a moved reservation, a network change); a server
                // that keeps refusing is asked less and less often.
                if self.refusals == 1 {
                    actions.extend(self.discover(now));
                } else {
                    self.state = State::Init;
                    let wait = Duration::from_secs(1 << (self.refusals - 1).min(6));
                    self.next = Some(now + wait.min(MAX_BACKOFF));
                }
                actions
            }
            _ => Vec::new(),
        }
    }

    /// Gives the lease back (DHCPRELEASE, RFC 2131 §4.4.6) and stops: at power-off, so the server can hand the
    /// address to someone else at once.
    pub fn release(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(lease) = self.lease.take() {
            self.xid = self.rng.u32(..);
            self.began = now;
            let release = Outgoing {
                kind: Kind::Release,
                xid: self.xid,
                secs: 0,
                broadcast: false,
                ciaddr: lease.addr,
                mac: self.mac,
                requested: None,
                server: Some(lease.server),
                hostname: &self.hostname,
            };
            actions.push(Action::Send(release.encode(), Dest::Server(lease.server)));
            actions.push(Action::Deconfigure(lease, Loss::Released));
        }
        self.state = State::Released;
        self.next = None;
        actions
    }

    /// INIT → SELECTING: a fresh transaction and its first DISCOVER.
    fn discover(&mut self, now: Instant) -> Vec<Action> {
        self.offer = None;
        self.begin_exchange(State::Selecting, now);
        self.next = Some(now + self.backoff());
        vec![self.send(Kind::Discover, Dest::Broadcast, now)]
    }

    fn begin_exchange(&mut self, state: State, now: Instant) {
        self.state = state;
        self.xid = self.rng.u32(..);
        self.began = now;
        self.requested_at = now;
        self.tries = 0;
    }

    fn bind(&mut self, lease: Lease) {
        self.refusals = 0;
        self.offer = None;
        self.state = State::Bound;
        self.next = lease.duration.map(|_| lease.start + lease.t1);
        self.lease = Some(lease);
    }

    /// RENEWING waits half the time to T2 and REBINDING half the time to expiry, at least a minute, but never
    /// past the point where the next state begins.
    fn schedule_retry(&mut self, now: Instant) {
        let Some(lease) = &self.lease else {
            self.next = Some(now);
            return;
        };
        let Some(expires) = lease.expires() else {
            self.next = None;
            return;
        };
        let until = match self.state {
            State::Renewing => lease.start + lease.t2,
            _ => expires,
        };
        let half = until.saturating_duration_since(now) / 2;
        self.next = Some((now + half.max(MIN_RENEW_RETRY)).min(until));
    }

    /// 4, 8, 16, 32, 64, 64… seconds by try, each ± up to a second.
    fn backoff(&mut self) -> Duration {
        let base = FIRST_BACKOFF
            .saturating_mul(1 << self.tries.min(4))
            .min(MAX_BACKOFF);
        let jitter = self.rng.i64(-JITTER_MS..=JITTER_MS);
        if jitter < 0 {
            base - Duration::from_millis(jitter.unsigned_abs())
        } else {
            base + Duration::from_millis(jitter as u64)
        }
    }

    /// The message of `kind` for the current state, with the fields RFC 2131 table 5 gives it there.
    fn send(&self, kind: Kind, dest: Dest, now: Instant) -> Action {
        let bound = self.lease.as_ref().map(|l| l.addr);
        let selecting = self.state == State::Requesting;
        let offer = self.offer.as_ref().filter(|_| selecting);
        let msg = Outgoing {
            kind,
            xid: self.xid,
            secs: now
                .saturating_duration_since(self.began)
                .as_secs()
                .min(u64::from(u16::MAX)) as u16,
            broadcast: bound.is_none(),
            ciaddr: match self.state {
                State::Renewing | State::Rebinding => bound.unwrap_or(Ipv4Addr::UNSPECIFIED),
                _ => Ipv4Addr::UNSPECIFIED,
            },
            mac: self.mac,
            requested: offer.and_then(|o| o.yiaddr),
            server: offer.and_then(|o| o.server),
            hostname: &self.hostname,
        };
        Action::Send(msg.encode(), dest)
    }

    /// The lease an ACK grants; options it leaves out come from the offer it follows.
    fn lease_from(&self, ack: &Reply, old: Option<&Lease>) -> Option<Lease> {
        let offer = self.offer.as_ref();
        let addr = ack.yiaddr.or(offer.and_then(|o| o.yiaddr))?;
        let server = ack
            .server
            .or(offer.and_then(|o| o.server))
            .or(old.map(|l| l.server))?;
        let prefix = ack
            .mask
            .or(offer.and_then(|o| o.mask))
            .map(|m| u32::from(m).leading_ones() as u8)
            .or(old.map(|l| l.prefix))
            .unwrap_or(24);
        let pick = |a: &[Ipv4Addr], o: Option<&Reply>, f: fn(&Reply) -> &[Ipv4Addr]| {
            if a.is_empty() {
                o.map(|o| f(o).to_vec()).unwrap_or_default()
            } else {
                a.to_vec()
            }
        };
        let routers = pick(&ack.routers, offer, |o| &o.routers);
        let dns = pick(&ack.dns, offer, |o| &o.dns);
        let secs = ack.lease_secs.or(offer.and_then(|o| o.lease_secs));
        let duration = match secs {
            Some(u32::MAX) => None,
            Some(s) => Some(Duration::from_secs(s.into())),
            None => Some(DEFAULT_LEASE),
        };
        let (t1, t2) = match duration {
            None => (Duration::MAX, Duration::MAX),
            Some(d) => {
                let secs = |s: Option<u32>| s.map(|s| Duration::from_secs(s.into()));
                let t2 = secs(ack.t2_secs).filter(|t| *t < d).unwrap_or(d * 7 / 8);
                let t1 = secs(ack.t1_secs)
                    .filter(|t| *t < t2)
                    .unwrap_or((d / 2).min(t2));
                (t1.max(MIN_T1), t2.max(MIN_T1))
            }
        };
        Some(Lease {
            addr,
            prefix,
            gateway: routers.first().copied(),
            dns,
            domain: ack.domain.clone().or(offer.and_then(|o| o.domain.clone())),
            server,
            duration,
            t1,
            t2,
            start: self.requested_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::message::tests::{reply, MAC};

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn machine(now: Instant) -> Machine {
        Machine::with_rng(MAC, "n1", now, fastrand::Rng::with_seed(7))
    }

    fn sent(actions: &[Action]) -> Vec<(Kind, Dest, Ipv4Addr, Vec<u8>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p, d) => Some((
                    match p[242] {
                        1 => Kind::Discover,
                        3 => Kind::Request,
                        7 => Kind::Release,
                        k => panic!("client sent kind {k}"),
                    },
                    *d,
                    Ipv4Addr::new(p[12], p[13], p[14], p[15]),
                    p.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn xid(p: &[u8]) -> u32 {
        u32::from_be_bytes(p[4..8].try_into().unwrap())
    }

    fn lease_opts(lease: u32, t1: u32, t2: u32) -> Vec<(u8, Vec<u8>)> {
        vec![
            (54, SERVER.octets().to_vec()),
            (51, lease.to_be_bytes().to_vec()),
            (58, t1.to_be_bytes().to_vec()),
            (59, t2.to_be_bytes().to_vec()),
            (1, vec![255, 255, 255, 0]),
            (3, SERVER.octets().to_vec()),
            (6, vec![10, 0, 2, 3]),
        ]
    }

    fn answer(kind: Kind, xid: u32, addr: Ipv4Addr, opts: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let o: Vec<(u8, &[u8])> = opts.iter().map(|(c, d)| (*c, d.as_slice())).collect();
        reply(kind, xid, addr, &o)
    }

    /// Runs DISCOVER → OFFER → REQUEST → ACK at `t0` with a lease of `lease` s (T1, T2 as given).
    fn bound(t0: Instant, lease: u32, t1: u32, t2: u32) -> Machine {
        let mut m = machine(t0);
        let d = sent(&m.on_timer(t0));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].0, d[0].1), (Kind::Discover, Dest::Broadcast));
        let opts = lease_opts(lease, t1, t2);
        let r = sent(&m.on_packet(t0, &answer(Kind::Offer, xid(&d[0].3), ADDR, &opts)));
        assert_eq!((r[0].0, r[0].1), (Kind::Request, Dest::Broadcast));
        assert_eq!(
            xid(&r[0].3),
            xid(&d[0].3),
            "REQUEST keeps the DISCOVER's xid"
        );
        let a = m.on_packet(t0, &answer(Kind::Ack, xid(&r[0].3), ADDR, &opts));
        let [Action::Configure(l)] = a.as_slice() else {
            panic!("{a:?}")
        };
        assert_eq!((l.addr, l.prefix, l.gateway), (ADDR, 24, Some(SERVER)));
        assert_eq!(m.state(), State::Bound);
        m
    }

    #[test]
    fn selecting_retransmits_with_randomized_doubling_delays() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.deadline(), Some(t0), "the first DISCOVER goes at once");
        let first = sent(&m.on_timer(t0));
        let mut prev = t0;
        let mut delays = Vec::new();
        for _ in 0..7 {
            let at = m.deadline().unwrap();
            assert!(m.on_timer(at - Duration::from_millis(1)).is_empty());
            let again = sent(&m.on_timer(at));
            assert_eq!(again[0].0, Kind::Discover);
            assert_eq!(xid(&again[0].3), xid(&first[0].3));
            delays.push((at - prev).as_millis() as i64);
            prev = at;
        }
        for (d, base) in delays.iter().zip([4, 8, 16, 32, 64, 64, 64]) {
            assert!((d - base * 1000).abs() <= 1000, "{delays:?}");
        }
        assert!(
            delays.iter().any(|d| d % 1000 != 0),
            "randomized: {delays:?}"
        );
    }

    #[test]
    fn renews_at_t1_by_unicast_and_rebinds_at_t2_by_broadcast() {
        let t0 = Instant::now();
        let mut m = bound(t0, 1000, 500, 875);
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(500)));
        let t1 = t0 + Duration::from_secs(500);
        let r = sent(&m.on_timer(t1));
        assert_eq!(m.state(), State::Renewing);
        assert_eq!(
            (r[0].0, r[0].1, r[0].2),
            (Kind::Request, Dest::Server(SERVER), ADDR)
        );
        let opts = &r[0].3[240..];
        assert!(
            !opts.windows(2).any(|w| w == [50, 4] || w == [54, 4]),
            "RENEWING names neither address nor server in options"
        );
        assert_eq!(r[0].3[10], 0, "no broadcast flag");
        // No answer: again after half the time left to T2, never sooner than a minute, never past T2.
        let mut retries = Vec::new();
        while let Some(at) = m.deadline().filter(|_| m.state() == State::Renewing) {
            if at >= t0 + Duration::from_secs(875) {
                break;
            }
            assert_eq!(sent(&m.on_timer(at))[0].1, Dest::Server(SERVER));
            retries.push((at - t0).as_millis());
        }
        assert_eq!(retries, [687_500, 781_250, 841_250]);
        let t2 = t0 + Duration::from_secs(875);
        assert_eq!(m.deadline(), Some(t2));
        let b = sent(&m.on_timer(t2));
        assert_eq!(m.state(), State::Rebinding);
        assert_eq!(
            (b[0].0, b[0].1, b[0].2),
            (Kind::Request, Dest::Broadcast, ADDR)
        );
        // Any server may answer now; the lease starts when this REQUEST went out.
        let mut opts = lease_opts(1000, 500, 875);
        opts[0].1 = vec![10, 0, 2, 9];
        let a = m.on_packet(t2, &answer(Kind::Ack, xid(&b[0].3), ADDR, &opts));
        let [Action::Extend {
            lease,
            rebinding: true,
        }] = a.as_slice()
        else {
            panic!("{a:?}")
        };
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 9));
        assert_eq!(lease.start, t2);
        assert_eq!(m.deadline(), Some(t2 + Duration::from_secs(500)));
    }

    #[test]
    fn a_lease_nobody_renews_is_dropped_at_expiry_and_discovery_starts_over() {
        let t0 = Instant::now();
        let mut m = bound(t0, 120, 60, 105);
        let mut seen = Vec::new();
        while m.state() != State::Selecting {
            let now = m.deadline().unwrap();
            let actions = m.on_timer(now);
            if let Some(Action::Deconfigure(l, why)) = actions.first() {
                assert_eq!((l.addr, why), (ADDR, &Loss::Expired));
            }
            for (kind, dest, _, _) in sent(&actions) {
                seen.push(((now - t0).as_secs(), kind, dest));
            }
        }
        assert_eq!(
            seen,
            [
                (60, Kind::Request, Dest::Server(SERVER)),
                (105, Kind::Request, Dest::Broadcast),
                (120, Kind::Discover, Dest::Broadcast)
            ]
        );
        assert!(m.lease().is_none());
    }

    #[test]
    fn a_nak_while_renewing_drops_the_address_and_a_new_one_is_bound() {
        let t0 = Instant::now();
        let mut m = bound(t0, 120, 60, 105);
        let t1 = t0 + Duration::from_secs(60);
        let r = sent(&m.on_timer(t1));
        let a = m.on_packet(
            t1,
            &answer(
                Kind::Nak,
                xid(&r[0].3),
                Ipv4Addr::UNSPECIFIED,
                &[
                    (54, SERVER.octets().to_vec()),
                    (56, b"static lease available".to_vec()),
                ],
            ),
        );
        assert!(
            matches!(&a[0], Action::Deconfigure(l, Loss::Refused(Some(m))) if l.addr == ADDR && m == "static lease available"),
            "{a:?}"
        );
        let d = sent(&a[1..]);
        assert_eq!((d[0].0, m.state()), (Kind::Discover, State::Selecting));
        let moved = Ipv4Addr::new(10, 0, 2, 60);
        let opts = lease_opts(120, 60, 105);
        let r = sent(&m.on_packet(t1, &answer(Kind::Offer, xid(&d[0].3), moved, &opts)));
        assert!(r[0].3[240..].windows(6).any(|w| w == [50, 4, 10, 0, 2, 60]));
        let a = m.on_packet(t1, &answer(Kind::Ack, xid(&r[0].3), moved, &opts));
        assert!(
            matches!(&a[..], [Action::Configure(l)] if l.addr == moved),
            "{a:?}"
        );
    }

    #[test]
    fn repeated_naks_back_off() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        let mut discover = sent(&m.on_timer(t0));
        let mut waits = Vec::new();
        for _ in 0..4 {
            let now = t0 + Duration::from_secs(100 * waits.len() as u64);
            let opts = lease_opts(120, 60, 105);
            let r = sent(&m.on_packet(now, &answer(Kind::Offer, xid(&discover[0].3), ADDR, &opts)));
            let nak = answer(Kind::Nak, xid(&r[0].3), Ipv4Addr::UNSPECIFIED, &[]);
            discover = sent(&m.on_packet(now, &nak));
            if discover.is_empty() {
                let at = m.deadline().unwrap();
                waits.push((at - now).as_secs());
                discover = sent(&m.on_timer(at));
            } else {
                waits.push(0);
            }
            assert_eq!(discover[0].0, Kind::Discover);
        }
        assert_eq!(waits, [0, 2, 4, 8], "the first refusal starts over at once");
    }

    #[test]
    fn replies_to_other_transactions_and_states_are_ignored() {
        let t0 = Instant::now();
        let mut m = bound(t0, 120, 60, 105);
        let opts = lease_opts(120, 60, 105);
        assert!(m
            .on_packet(t0, &answer(Kind::Nak, 0, ADDR, &opts))
            .is_empty());
        let r = sent(&m.on_timer(t0 + Duration::from_secs(60)));
        let x = xid(&r[0].3);
        assert!(m
            .on_packet(t0, &answer(Kind::Offer, x, ADDR, &opts))
            .is_empty());
        assert!(m
            .on_packet(t0, &answer(Kind::Ack, x ^ 1, ADDR, &opts))
            .is_empty());
        assert_eq!(m.state(), State::Renewing);
    }

    #[test]
    fn server_timers_are_used_when_sane_and_defaults_otherwise() {
        let t0 = Instant::now();
        let l = bound(t0, 1000, 100, 200).lease().unwrap().clone();
        assert_eq!(
            (l.t1, l.t2),
            (Duration::from_secs(100), Duration::from_secs(200))
        );
        let l = bound(t0, 1000, 900, 2000).lease().unwrap().clone();
        assert_eq!(
            (l.t1, l.t2),
            (Duration::from_secs(500), Duration::from_secs(875))
        );
        let m = bound(t0, u32::MAX, 0, 0);
        assert_eq!(m.lease().unwrap().duration, None);
        assert_eq!(m.deadline(), None, "an infinite lease is never renewed");
    }

    #[test]
    fn release_is_unicast_to_the_server_and_drops_the_address() {
        let t0 = Instant::now();
        let mut m = bound(t0, 120, 60, 105);
        let a = m.release(t0);
        let s = sent(&a);
        assert_eq!(
            (s[0].0, s[0].1, s[0].2),
            (Kind::Release, Dest::Server(SERVER), ADDR)
        );
        assert!(s[0].3[240..].windows(6).any(|w| w == [54, 4, 10, 0, 2, 2]));
        assert!(matches!(&a[1], Action::Deconfigure(l, Loss::Released) if l.addr == ADDR));
        assert_eq!((m.state(), m.deadline()), (State::Released, None));
        assert!(m.release(t0).is_empty(), "nothing left to release");
        let mut fresh = machine(t0);
        assert!(fresh.release(t0).is_empty());
    }
}
