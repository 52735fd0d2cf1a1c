//! What the simulated clients do: acquire and release in a cycle, or fill up to a number of
//! seats and then renew them; and the loop that keeps one request in flight on every
//! connection of a thread.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tessera::net::proto::{self, NetRequest, NetResponse};

use crate::client::{Conn, Op};
use crate::epoll::Epoll;
use crate::report::{Tally, kind, kind_of_response};

#[derive(Clone, Copy)]
pub(crate) enum Work {
    /// Acquire → Release, forever (until the deadline).
    Cycle,
    /// Acquire until holding this many seats.
    Fill(usize),
}

pub(crate) struct Ctx {
    pub(crate) vendor_id: u32,
    pub(crate) product: u32,
    pub(crate) nonce: [u8; 4],
}

/// The next request of a client, or None when it has nothing more to do.
fn next_request(c: &mut Conn, work: Work, ctx: &Ctx) -> Option<(Op, NetRequest)> {
    let acquire = |seat_id| NetRequest::Acquire {
        seat_id,
        vendor_id: ctx.vendor_id,
        product_code: ctx.product,
        features: 0,
        exclusive: false,
    };
    match work {
        Work::Cycle => match c.holding {
            Some(seat_id) => {
                c.pending_seat = seat_id;
                Some((Op::Release, NetRequest::Release { seat_id }))
            }
            None => {
                let s = c.new_seat(ctx.nonce);
                c.pending_seat = s;
                Some((Op::Acquire, acquire(s)))
            }
        },
        Work::Fill(k) => {
            if c.seats.len() >= k || c.tried >= 2 * k {
                return None;
            }
            c.tried += 1;
            let s = c.new_seat(ctx.nonce);
            c.pending_seat = s;
            Some((Op::Acquire, acquire(s)))
        }
    }
}

/// Handles the answer to the request in flight.
fn on_response(c: &mut Conn, work: Work, op: Op, resp: NetResponse, t: &mut Tally) {
    match (op, resp) {
        (Op::Acquire, NetResponse::Granted(g)) if g.seat_id == c.pending_seat => match work {
            Work::Cycle => c.holding = Some(g.seat_id),
            Work::Fill(_) => c.seats.push(g.seat_id),
        },
        (Op::Release, NetResponse::Released) => c.holding = None,
        (Op::Renew, NetResponse::Renewed { lost, .. }) => t.lost += lost.len() as u64,
        (op, NetResponse::Error { status, message }) => {
            if op == Op::Release {
                c.holding = None;
            }
            let e = proto::response_error(status, message);
            t.error(format!("{op:?}: {}", kind(&e)));
        }
        (op, other) => {
            if op == Op::Release {
                c.holding = None;
            }
            t.error(format!(
                "{op:?}: unexpected answer {}",
                kind_of_response(&other)
            ));
        }
    }
}

/// Paces a thread's requests at a fixed interval.
pub(crate) struct Pacer {
    pub(crate) interval: Duration,
    pub(crate) next: Instant,
}

/// Keeps one request in flight on every live connection until each client is done or the
/// deadline passes (then waits up to `drain` for the answers still in flight).
pub(crate) fn drive(
    conns: &mut [Conn],
    work: Work,
    ctx: &Ctx,
    mut pacer: Option<Pacer>,
    deadline: Instant,
    drain: Duration,
    t: &mut Tally,
) {
    let mut idle: VecDeque<usize> = (0..conns.len()).filter(|&i| !conns[i].dead).collect();
    let mut in_flight = 0usize;
    // Answers are waited for with epoll: poll(2) over a thousand sockets per wait costs the
    // load generator more CPU than the requests themselves.
    let epoll = Epoll::new(conns).unwrap_or_else(|e| panic!("epoll: {e}"));
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut which: Vec<usize> = Vec::with_capacity(conns.len());
    loop {
        let now = Instant::now();
        let sending = now < deadline;
        while sending && let Some(&i) = idle.front() {
            if let Some(p) = pacer.as_mut() {
                if now < p.next {
                    break;
                }
                p.next += p.interval;
                if p.next + Duration::from_millis(100) < now {
                    p.next = now; // never burst more than 100 ms of backlog
                }
            }
            idle.pop_front();
            let c = &mut conns[i];
            let Some((op, req)) = next_request(c, work, ctx) else {
                continue;
            };
            let sent = Instant::now();
            match c.send(&req) {
                Ok(n) => {
                    c.pending = Some((op, sent));
                    in_flight += 1;
                    if op == Op::Acquire && t.acquire_frame.is_none() {
                        t.acquire_frame = Some((n, 0));
                    }
                    if op == Op::Release && t.release_frame.is_none() {
                        t.release_frame = Some((n, 0));
                    }
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("{op:?}: transport {}", kind(&e)));
                }
            }
        }
        if in_flight == 0 {
            if !sending || idle.is_empty() {
                return;
            }
            // Rate-limited: wait for the next slot.
            if let Some(p) = &pacer {
                std::thread::sleep(p.next.saturating_duration_since(Instant::now()));
            }
            continue;
        }
        if !sending && now > deadline + drain {
            for c in conns.iter_mut() {
                if let Some((op, _)) = c.pending.take() {
                    t.error(format!("{op:?}: no answer before the end of the run"));
                }
            }
            return;
        }
        // Wait for answers: with one connection a blocking read, else epoll.
        which.clear();
        if conns.len() == 1 {
            which.push(0);
        } else {
            let wait_ms = match &pacer {
                Some(p) if !idle.is_empty() => {
                    p.next.saturating_duration_since(Instant::now()).as_millis() as i32
                }
                _ => 100,
            };
            match epoll.wait(&mut events, wait_ms) {
                Ok(n) => which.extend(events[..n].iter().map(|e| e.u64 as usize)),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    t.error(format!("epoll_wait: {e}"));
                    return;
                }
            }
        }
        for &i in &which {
            let c = &mut conns[i];
            let Some((op, sent)) = c.pending.take() else {
                // Readable with nothing asked: the server closed it or said something
                // unasked. Either way the connection is done.
                if !c.dead {
                    c.dead = true;
                    t.error("unsolicited data or close from the server".to_string());
                }
                epoll.remove(c);
                continue;
            };
            in_flight -= 1;
            match c.recv() {
                Ok((resp, n)) => {
                    let ns = sent.elapsed().as_nanos() as u64;
                    t.lat.entry(op).or_default().push(ns);
                    if op == Op::Acquire
                        && let Some((_, r @ 0)) = t.acquire_frame.as_mut()
                    {
                        *r = n;
                    }
                    if op == Op::Release
                        && let Some((_, r @ 0)) = t.release_frame.as_mut()
                    {
                        *r = n;
                    }
                    on_response(c, work, op, resp, t);
                    idle.push_back(i);
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("{op:?}: transport {}", kind(&e)));
                }
            }
        }
    }
}

/// Hold mode's steady state: each client renews all its seats every `renew`, at its own
/// offset in the interval, until `end`.
pub(crate) fn renew_loop(
    conns: &mut [Conn],
    offsets: &[Duration],
    renew: Duration,
    end: Instant,
    t: &mut Tally,
) {
    let start = Instant::now();
    let mut round = 0u32;
    loop {
        for (c, off) in conns.iter_mut().zip(offsets) {
            if c.dead || c.seats.is_empty() {
                continue;
            }
            let due = start + renew * round + *off;
            if due >= end {
                return;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let req = NetRequest::Renew {
                seat_ids: c.seats.clone(),
            };
            let sent = Instant::now();
            let r = c
                .send(&req)
                .and_then(|n| c.recv().map(|(resp, m)| (resp, n, m)));
            match r {
                Ok((resp, n, m)) => {
                    t.lat
                        .entry(Op::Renew)
                        .or_default()
                        .push(sent.elapsed().as_nanos() as u64);
                    t.renew_frame.get_or_insert((n, m));
                    on_response(c, Work::Fill(0), Op::Renew, resp, t);
                }
                Err(e) => {
                    c.dead = true;
                    t.error(format!("Renew: transport {}", kind(&e)));
                }
            }
        }
        round += 1;
        if start + renew * round >= end {
            return;
        }
    }
}
