//! `tessera-load bare`: a plain TCP echo on loopback, the baseline for a request's round
//! trip (no Noise, no server).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Round trips of a plain TCP echo on loopback (no-delay both ends, one write each way, as
/// the license protocol does): the latencies in nanoseconds, sorted.
pub(crate) fn bare(bytes: usize, reply: usize, iterations: usize) -> Result<Vec<u64>> {
    if bytes == 0 || reply == 0 {
        bail!("--bytes and --reply-bytes must be positive");
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; bytes];
        let out = vec![0x5Au8; reply];
        loop {
            match s.read_exact(&mut buf) {
                Ok(()) => s.write_all(&out)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = vec![0xA5u8; bytes];
    let mut back = vec![0u8; reply];
    let mut lat = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let t = Instant::now();
        c.write_all(&msg)?;
        c.read_exact(&mut back)?;
        // The first tenth warms up.
        if i >= iterations / 10 {
            lat.push(t.elapsed().as_nanos() as u64);
        }
    }
    drop(c);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    lat.sort_unstable();
    Ok(lat)
}
